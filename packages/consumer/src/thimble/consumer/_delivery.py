"""Commit logic, all of it: which offsets may be committed, and when.

At-least-once (default): librdkafka auto-commits (``enable.auto.commit=true``) only offsets we *store*
(``enable.auto.offset.store=false``). Each polled message gets a :class:`Pending` holding one token
for its processing plus one per output written to a sink; the token is released when the handler has
returned and the output is dispatched, each sink releases its tokens once the output is durable.
:class:`OffsetTracker` keeps the messages of each partition in offset order and stores ``offset + 1``
of the last message whose predecessors are all complete. A revocation commits what is stored
synchronously, inside the poll that serves it; shutdown commits it asynchronously and goes on polling
until :class:`CommitWatch` sees it back, so a coordinator away for longer than ``max.poll.interval.ms``
never costs the member the group (and the commit with it). A failed delivery stops the partition there:
nothing after it is ever stored.

Exactly-once (topic sinks only): outputs, dead letters and the input offsets go into Kafka
transactions (:mod:`thimble.consumer._transactions`); :meth:`OffsetTracker.processed_positions` gives
the offsets each one commits, and nothing is committed otherwise.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from thimble.common.logging import get_logger
from thimble.consumer.errors import DeliveryError

log = get_logger(__name__)

TP = tuple[str, int]


class Pending:
    """Outstanding work of one message (or of one batch, shared by its messages)."""

    __slots__ = ("error", "processed", "remaining")

    def __init__(self) -> None:
        self.remaining = 1
        self.processed = False
        self.error: BaseException | None = None

    def hold(self) -> None:
        """One more output awaits its sink's acknowledgement."""
        self.remaining += 1

    def release(self) -> None:
        """A sink acknowledged one output."""
        self.remaining -= 1

    def done(self) -> None:
        """The handler returned and every output was handed to its sink."""
        self.processed = True
        self.remaining -= 1

    def fail(self, error: BaseException) -> None:
        """A sink could not acknowledge an output: this message and its successors are never committed."""
        self.error = error
        self.remaining -= 1

    def __call__(self, err: KafkaError | None, msg: Any) -> None:
        """The delivery callback (``on_delivery``) of the records it holds: the object itself, since a
        bound method made for every record costs close to a microsecond."""
        if err is not None:
            self.error = DeliveryError(f"delivery to {msg.topic()} failed: {err.str()}")
        self.remaining -= 1


class OffsetTracker:
    """Per-partition queues of in-flight messages, in offset order."""

    def __init__(self) -> None:
        # Per partition: (offset, pending, time.monotonic() when tracked), in offset order.
        self._parts: dict[TP, deque[tuple[int, Pending, float]]] = {}

    def track(self, tp: TP, offset: int, pending: Pending) -> None:
        queue = self._parts.get(tp)
        if queue is None:
            queue = self._parts[tp] = deque()
        queue.append((offset, pending, time.monotonic()))

    def waiting_since(self) -> float | None:
        """When the longest-waiting processed message still awaiting its outputs' acknowledgements was
        tracked (``time.monotonic()``), or ``None`` when no processed message waits for one."""
        oldest: float | None = None
        for queue in self._parts.values():
            if queue:
                _offset, pending, since = queue[0]
                if pending.processed and pending.remaining > 0 and pending.error is None:
                    oldest = since if oldest is None else min(oldest, since)
        return oldest

    def inflight(self) -> int:
        return sum(len(q) for q in self._parts.values())

    def completed(self) -> list[TopicPartition]:
        """Pop every complete message at a partition's head; the offsets to store (``last + 1``).

        Raises :class:`DeliveryError` when the head failed (after storing what precedes it).
        """
        out: list[TopicPartition] = []
        failure: BaseException | None = None
        for (topic, partition), queue in self._parts.items():
            last = -1
            while queue:
                offset, pending, _since = queue[0]
                if pending.error is not None:
                    failure = failure or pending.error
                    break
                if pending.remaining > 0:
                    break
                queue.popleft()
                last = offset
            if last >= 0:
                out.append(TopicPartition(topic, partition, last + 1))
        if failure is not None:
            raise DeliveryError(str(failure)) from failure
        return out

    def processed_positions(self) -> list[TopicPartition]:
        """Exactly-once: ``last + 1`` of each partition's leading run of processed messages, popped."""
        out: list[TopicPartition] = []
        for (topic, partition), queue in self._parts.items():
            last = -1
            while queue and queue[0][1].processed:
                last = queue.popleft()[0]
            if last >= 0:
                out.append(TopicPartition(topic, partition, last + 1))
        return out

    def forget(self, tps: set[TP]) -> None:
        """Drop the state of partitions this process no longer owns."""
        for tp in tps:
            self._parts.pop(tp, None)

    def forget_all(self) -> None:
        self._parts.clear()


def store(consumer: Any, offsets: list[TopicPartition]) -> None:
    """Store offsets for the next auto-commit; a partition revoked meanwhile is skipped."""
    if not offsets:
        return
    try:
        consumer.store_offsets(offsets=offsets)
    except KafkaException as exc:
        # _STATE: a partition was revoked since; its new owner re-reads from the last commit.
        log.debug("could not store offsets", extra={"error": str(exc)})


def commit_stored(consumer: Any) -> None:
    """Commit the stored offsets now (rebalance, shutdown); having nothing to commit is fine."""
    try:
        consumer.commit(asynchronous=False)
    except KafkaException as exc:
        if exc.args and exc.args[0].code() == KafkaError._NO_OFFSET:
            return
        log.warning("offset commit failed", extra={"error": str(exc)})


class CommitWatch:
    """The consumer's ``on_commit`` callback, which its ``poll`` serves: tells when the commit of given
    offsets has come back, and logs it when it failed."""

    def __init__(self) -> None:
        self._awaited: frozenset[tuple[str, int, int]] = frozenset()
        self._returned = threading.Event()

    def expect(self, offsets: list[TopicPartition]) -> threading.Event:
        """The event set once a commit of exactly ``offsets`` came back, succeeded or not."""
        self._awaited = frozenset((tp.topic, tp.partition, tp.offset) for tp in offsets)
        self._returned = threading.Event()
        return self._returned

    def __call__(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if (
            not self._awaited
            or frozenset((tp.topic, tp.partition, tp.offset) for tp in partitions) != self._awaited
        ):
            return  # an auto-commit: it is made again every interval
        failed = sorted(f"{tp.topic}[{tp.partition}]" for tp in partitions if tp.error is not None)
        if err is not None or failed:
            log.warning(
                "offset commit failed",
                extra={"error": str(err) if err is not None else "", "partitions": failed},
            )
        self._returned.set()
