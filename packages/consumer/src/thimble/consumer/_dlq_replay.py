"""Re-feed dead letters to the topics they came from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from thimble.common.config import CONSUMER_DEFAULTS, check_topic_name
from thimble.consumer._dead_letters import (
    ERROR_CLASS,
    HEADERS_DROPPED,
    KEY_CUT,
    ORIGINAL_TOPIC,
    PREFIX,
    REPLAYED_FROM,
    VALUE_CUT,
)
from thimble.consumer._kafka import committed_offsets, kafka_client, kafka_log, producer_config
from thimble.consumer.config import ConsumerSettings
from thimble.consumer.errors import DeliveryError, ServiceUnavailableError, TopicMissingError

POLL_BATCH = 500
POLL_TIMEOUT_S = 1.0
FLUSH_TIMEOUT_S = 30.0
METADATA_TIMEOUT_S = 10.0
# A target topic with one of these errors in the metadata cannot take a record: its dead letter is refused.
_UNWRITABLE = {
    KafkaError.UNKNOWN_TOPIC_OR_PART: "no such topic (create it, then replay again)",
    KafkaError.TOPIC_EXCEPTION: "not a valid topic",
    KafkaError.TOPIC_AUTHORIZATION_FAILED: "not authorized to write to the topic",
}


@dataclass(slots=True)
class ReplayReport:
    replayed: int = 0
    skipped: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    """Dead letters not replayed: refused (their topic is invalid or missing) or not acknowledged."""
    failures: list[str] = field(default_factory=list)
    """One line per dead letter not replayed: where it is, the topic it was for, and why."""
    cut: int = 0
    """Dead letters passed over because they hold only a prefix of their record (too large to
    dead-letter whole): sending them back would write a record that never was."""


@dataclass(slots=True)
class _Partition:
    """Replay state of one dead-letter partition."""

    end: int  # the last stable offset when the replay started: where it stops
    commit: int  # the offset to commit once every dead letter sent before it is acknowledged
    held: bool = False  # a dead letter was skipped: the commit stays before it
    failed: int | None = None  # the first dead letter not replayed: the commit stays before it
    in_flight: set[int] = field(default_factory=set)  # dead letters sent, not acknowledged yet

    def skipped(self) -> None:
        self.held = True

    def sent(self, offset: int, in_flight: bool) -> None:
        if in_flight:
            self.in_flight.add(offset)
        if not self.held:
            self.commit = offset + 1

    def delivered(self, offset: int, ok: bool) -> None:
        self.in_flight.discard(offset)
        if not ok:
            self.fail(offset)

    def fail(self, offset: int) -> None:
        """The dead letter at ``offset`` was not replayed: none behind it is sent in this replay."""
        self.failed = offset if self.failed is None else min(self.failed, offset)

    def reached(self, position: int) -> bool:
        """The partition read up to ``position`` (past control records too); ``True`` when at its end."""
        if position < self.end:
            return False
        if not self.held:
            self.commit = max(self.commit, self.end)
        return True

    def committable(self) -> int:
        """The offset to commit: before the first dead letter skipped, failed or still in flight."""
        stops = [self.commit, *self.in_flight]
        if self.failed is not None:
            stops.append(self.failed)
        return min(stops)


def replay(
    settings: ConsumerSettings,
    dlq_topic: str,
    *,
    to: str | None = None,
    error_class: str | None = None,
    limit: int | None = None,
    dry_run: bool = False,
    on_record: Callable[[str, int, str], None] | None = None,
) -> ReplayReport:
    """Produce the dead letters of ``dlq_topic`` (up to its end now) back to their original topic.

    The dead-letter topic is read with ``read_committed`` up to its last stable offset, so a topic an
    exactly-once consumer wrote (ending in a transaction marker) is read to its end. Progress is committed
    under the group ``thimble-dlq-replay.<dlq_topic>`` after every acknowledged batch (and when
    interrupted), so a later replay only re-feeds what was not replayed. A dead letter the filter
    skips holds its partition's commit before it: a later replay offers it again (and re-sends the
    replayed letters behind it). A dead letter that cannot be replayed (its topic is not a valid name,
    does not exist, or the broker does not acknowledge the record) is counted in ``failed`` and described
    in ``failures``; its partition's commit stays before it and nothing behind it is sent, so a later
    replay (once the topic is fixed) sends exactly the dead letters left. A dead letter that holds only
    a prefix of its record (``thimble.value.cut``) is never sent; it is counted in ``cut`` and passed
    over. Dead-letter headers are removed;
    ``thimble.replayed.from`` names the dead letter. A tombstone stays a tombstone.
    """
    return _Replay(settings, dlq_topic, to, error_class, limit, dry_run, on_record).run()


class _Replay:
    def __init__(
        self,
        settings: ConsumerSettings,
        dlq_topic: str,
        to: str | None,
        error_class: str | None,
        limit: int | None,
        dry_run: bool,
        on_record: Callable[[str, int, str], None] | None,
    ) -> None:
        self.topic = dlq_topic
        self.to = to
        self.error_class = error_class
        self.limit = limit
        self.dry_run = dry_run
        self.on_record = on_record
        self.report = ReplayReport()
        self.parts: dict[int, _Partition] = {}
        self.refusals: dict[str, str | None] = {}  # per target topic: why it cannot take a record
        self.consumer = kafka_client(
            Consumer,
            {
                **CONSUMER_DEFAULTS,
                **settings.kafka.client_config(),
                "group.id": f"thimble-dlq-replay.{dlq_topic}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
                "logger": kafka_log,
            },
            settings,
        )
        self.producer = kafka_client(
            Producer, producer_config(settings, "thimble-dlq-replay"), settings, "producer_extra"
        )

    def run(self) -> ReplayReport:
        try:
            self._assign()
            try:
                self._replay()
            finally:
                self._checkpoint()  # also when interrupted: what was acknowledged is not sent again
            return self.report
        finally:
            self.consumer.close()

    def _assign(self) -> None:
        """Start each partition at its committed offset; stop at its last stable offset now."""
        try:
            self._assign_partitions()
        except KafkaException as exc:
            raise ServiceUnavailableError(
                f"cannot read where the replay of {self.topic!r} stands (its committed offsets and end): "
                + _reason(exc)
            ) from None

    def _assign_partitions(self) -> None:
        metadata = self.consumer.list_topics(self.topic, timeout=10).topics.get(self.topic)
        if metadata is None or metadata.error is not None:
            raise TopicMissingError(f"dead-letter topic {self.topic!r} does not exist")
        tps = [TopicPartition(self.topic, p) for p in sorted(metadata.partitions)]
        committed = {tp.partition: tp.offset for tp in committed_offsets(self.consumer, tps, 10)}
        starts: list[TopicPartition] = []
        for tp in tps:
            # A read_committed consumer's high watermark is the last stable offset.
            low, end = self.consumer.get_watermark_offsets(tp, timeout=10, cached=False)
            start = committed.get(tp.partition, -1)
            start = low if start is None or start < low else start
            if start < end:
                self.parts[tp.partition] = _Partition(end=end, commit=start)
                starts.append(TopicPartition(self.topic, tp.partition, start))
        self.consumer.assign(starts)

    def _replay(self) -> None:
        reading = set(self.parts)
        while reading and not self._limit_reached():
            for msg in self.consumer.consume(POLL_BATCH, POLL_TIMEOUT_S):
                partition = int(msg.partition() or 0)
                if partition not in reading:
                    continue
                part = self.parts[partition]
                if part.failed is not None:  # the rest of the partition waits for a later replay
                    reading.discard(partition)
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        raise KafkaException(err)
                    if part.reached(int(msg.offset() or 0)):
                        reading.discard(partition)
                    continue
                if self._limit_reached():
                    break
                offset = int(msg.offset() or 0)
                target = self._send(msg, partition, offset)
                if part.reached(offset + 1):
                    reading.discard(partition)
                if target is not None and self.on_record is not None:
                    self.on_record(target, offset, _header(msg, ERROR_CLASS))
            self._checkpoint()
            reading = {p for p in reading if self.parts[p].failed is None}

    def _limit_reached(self) -> bool:
        return self.limit is not None and self.report.replayed >= self.limit

    def _send(self, msg: Any, partition: int, offset: int) -> str | None:
        """Produce one dead letter back (unless a dry run): its target, or ``None`` when not sent."""
        part = self.parts[partition]
        target = self.to or _header(msg, ORIGINAL_TOPIC)
        klass = _header(msg, ERROR_CLASS)
        if not target or (self.error_class is not None and self.error_class not in klass):
            self.report.skipped += 1
            part.skipped()
            return None
        if any(_header(msg, name) for name in (VALUE_CUT, KEY_CUT, HEADERS_DROPPED)):
            self.report.cut += 1
            part.sent(offset, in_flight=False)
            return None
        refusal = self._refusal(target)
        if refusal is not None:
            self._failed(partition, offset, target, refusal)
            return None
        if not self.dry_run:
            kept = [(k, v) for k, v in cast(Any, msg.headers()) or [] if not k.startswith(PREFIX)]
            kept.append((REPLAYED_FROM, f"{self.topic}/{partition}/{offset}".encode()))
            delivered = partial(self._delivered, partition, offset, target)
            while True:
                try:
                    self.producer.produce(target, msg.value(), msg.key(), headers=kept, on_delivery=delivered)
                    break
                except BufferError:
                    self.producer.poll(0.1)
                except KafkaException as exc:
                    self._failed(partition, offset, target, _reason(exc))
                    return None
        part.sent(offset, in_flight=not self.dry_run)
        self.report.replayed += 1
        self.report.by_topic[target] = self.report.by_topic.get(target, 0) + 1
        if not self.dry_run:
            self.producer.poll(0)  # after the letter is in flight: its delivery report may come now
        return target

    def _refusal(self, target: str) -> str | None:
        """Why ``target`` cannot take a record (an invalid name, a missing topic), asked once per topic."""
        if target not in self.refusals:
            self.refusals[target] = self._check_target(target)
        return self.refusals[target]

    def _check_target(self, target: str) -> str | None:
        try:
            check_topic_name(target)
        except ValueError:
            return "not a Kafka topic name (letters, digits, '.', '_' and '-', at most 249 characters)"
        try:
            metadata = self.consumer.list_topics(target, timeout=METADATA_TIMEOUT_S).topics.get(target)
        except KafkaException:
            return None  # unknown: the broker's acknowledgement decides
        err = None if metadata is None else metadata.error
        return None if err is None else _UNWRITABLE.get(err.code())

    def _delivered(self, partition: int, offset: int, target: str, err: KafkaError | None, _msg: Any) -> None:
        self.parts[partition].delivered(offset, ok=err is None)
        if err is not None:
            self.report.replayed -= 1
            self.report.by_topic[target] -= 1
            if not self.report.by_topic[target]:
                del self.report.by_topic[target]
            self._failed(partition, offset, target, err.str())

    def _failed(self, partition: int, offset: int, target: str, reason: str) -> None:
        self.parts[partition].fail(offset)
        self.report.failed += 1
        self.report.failures.append(
            f"dead letter {self.topic}/{partition}/{offset} was not replayed to {target!r}: {reason}"
        )

    def _checkpoint(self) -> None:
        """Wait for the replayed records' acknowledgements, then commit each partition up to its first
        dead letter skipped, not replayed or not acknowledged."""
        if self.dry_run or not self.parts:
            return
        waiting = self.producer.flush(FLUSH_TIMEOUT_S)
        offsets = [
            TopicPartition(self.topic, p, offset)
            for p, part in self.parts.items()
            if (offset := part.committable()) >= 0
        ]
        if offsets:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        if waiting:
            raise DeliveryError(
                f"{waiting} replayed record(s) not acknowledged within {FLUSH_TIMEOUT_S:g} s; "
                "their dead letters stay to be replayed"
            )


def _reason(exc: KafkaException) -> str:
    err = exc.args[0] if exc.args else None
    return err.str() if isinstance(err, KafkaError) else str(exc)


def _header(msg: Any, name: str) -> str:
    for key, value in msg.headers() or ():
        if key == name:
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")
    return ""
