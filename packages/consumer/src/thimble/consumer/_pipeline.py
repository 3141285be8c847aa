"""Routes polled messages to their handler, batches for batch handlers, and tracks every offset.

Offsets are tracked per *segment*, not per message: the messages a per-message handler handled since
the last look at the tracker share one :class:`Pending`, and enter the tracker (one entry per partition,
its last offset) only when the segment is settled, that is when someone asks what is complete
(:meth:`Pipeline.completed`, :meth:`Pipeline.processed_positions`). A message enters its segment once
its handler returned and its outputs were handed to the sinks, so a settled segment holds processed
messages only; a batch handler's batch is its own segment. Used by the Kafka runner (on its worker
thread, under the runner's lock) and by the test harness.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from confluent_kafka import TopicPartition

from thimble.consumer import _log_context as log_context
from thimble.consumer._dead_letters import DeadLetterWriter
from thimble.consumer._delivery import TP, OffsetTracker, Pending
from thimble.consumer._landing import LandingStore, LandingWriter
from thimble.consumer._metrics import ConsumerMetrics
from thimble.consumer._online_store import OnlineBackend, OnlineStoreWriter
from thimble.consumer._processing import DEFAULT_RETRY_ON, Processor, RetryPolicy
from thimble.consumer._signature import HandlerSpec
from thimble.consumer._state_store import StateBackend
from thimble.consumer._stateful import StatefulProcessor
from thimble.consumer._transport import Transport
from thimble.consumer._writers import SinkWriter, TopicWriter
from thimble.consumer.config import ConsumerSettings
from thimble.consumer.sinks import Landing, OnlineStore, Topic

if TYPE_CHECKING:
    from thimble.consumer.app import App


@dataclass(slots=True)
class Route:
    """The handler of one source topic, and its open batch."""

    spec: HandlerSpec
    processor: Processor
    batch: bool
    batch_size: int
    batch_wait_s: float
    buffer: list[Any] = field(default_factory=list)
    started: float = 0.0


class Interrupt:
    """Raised from any thread to end :meth:`Pipeline.feed_run` before its next message."""

    __slots__ = ("raised",)

    def __init__(self) -> None:
        self.raised = False


@dataclass(slots=True)
class Backends:
    """Where sinks write: Kafka/Redis/files in production, memory in the harness."""

    transport: Transport
    online: Callable[[], OnlineBackend]
    landing: LandingStore
    states: Callable[[], StateBackend] | None = None


class Pipeline:
    """Every handler of an app wired to its sinks."""

    def __init__(
        self,
        app: App,
        settings: ConsumerSettings,
        backends: Backends,
        metrics: ConsumerMetrics,
        wait: Callable[[float], bool],
    ) -> None:
        cfg = settings.consumer
        self.tracker = OffsetTracker()
        # The open segment: its shared Pending, and the last offset handled in it per partition.
        self._pending = Pending()
        self._last: dict[TP, int] = {}
        self.writers: list[SinkWriter] = []
        self.processors: list[Processor] = []
        self.routes: dict[str, Route] = {}
        self.metrics = metrics
        dead_letters = DeadLetterWriter(backends.transport)
        online: OnlineBackend | None = None
        states: StateBackend | None = None
        for spec in app.handlers:
            writers: list[SinkWriter] = []
            for sink in spec.sinks:
                writer: SinkWriter
                if isinstance(sink, Topic):
                    writer = TopicWriter(sink.name, backends.transport)
                elif isinstance(sink, OnlineStore):
                    online = online or backends.online()
                    writer = OnlineStoreWriter(sink, settings.online_store.key_prefix, online)
                elif isinstance(sink, Landing):
                    writer = LandingWriter(
                        sink, backends.landing, cfg.landing_batch_rows, cfg.landing_flush_interval_s
                    )
                writers.append(writer)
            self.writers.extend(writers)
            policy = RetryPolicy(
                retry_on=spec.retry_on if spec.retry_on is not None else app.retry_on or DEFAULT_RETRY_ON,
                max_retries=cfg.max_retries,
                backoff_ms=cfg.retry_backoff_ms,
                backoff_max_ms=cfg.retry_backoff_max_ms,
            )
            processor: Processor
            if spec.state is not None:
                assert backends.states is not None, "stateful handlers need a state backend"
                states = states or backends.states()
                processor = StatefulProcessor(
                    spec,
                    writers,
                    dead_letters,
                    policy,
                    cfg.dlq_suffix,
                    metrics.handler(spec.name),
                    wait,
                    states,
                    settings.online_store.key_prefix,
                )
            else:
                processor = Processor(
                    spec, writers, dead_letters, policy, cfg.dlq_suffix, metrics.handler(spec.name), wait
                )
            self.processors.append(processor)
            for source in spec.sources:
                # A stateful handler takes each polled batch's events together (one state read and
                # write per entity), as soon as the batch went through.
                self.routes[source] = Route(
                    spec,
                    processor,
                    spec.batch or spec.state is not None,
                    spec.batch_size or cfg.batch_size,
                    (spec.batch_wait_ms if spec.batch_wait_ms is not None else cfg.batch_wait_ms) / 1000,
                )
        self._has_batches = any(r.batch for r in self.routes.values())
        self._stateful = [r for r in self.routes.values() if r.spec.state is not None]
        self._states = states

    def feed(self, msg: Any) -> None:
        """Handle one polled message (or add it to its handler's batch)."""
        topic = msg.topic()
        route = self.routes[topic]
        if route.batch:
            if not route.buffer:
                route.started = time.monotonic()
            route.buffer.append(msg)
            if len(route.buffer) >= route.batch_size:
                self._run_batch(route)
            return
        route.processor.handle(msg, self._pending)
        self._last[(topic, msg.partition())] = msg.offset()

    def feed_run(self, msgs: list[Any], start: int, stop: int, interrupt: Interrupt) -> int:
        """:meth:`feed` ``msgs[start:stop]`` in one loop, each noted as the message being handled (for
        log lines), until ``interrupt`` is raised; returns the index of the first message not fed.

        The worker feeds the messages of a polled batch in such runs rather than one by one through its
        own checks, which cost about 0.5 µs per message; whatever those checks look at raises
        ``interrupt`` when it changes.
        """
        routes, last, pending, current = self.routes, self._last, self._pending, log_context.current
        topic: str | None = None
        handle: Any = None  # the processor of ``topic``
        i = start
        while i < stop and not interrupt.raised:
            msg = msgs[i]
            i += 1
            current.msg = msg
            name = msg.topic()
            if name != topic:
                route = routes[name]
                if route.batch:
                    self.feed(msg)
                    topic = None
                    continue
                topic, handle = name, route.processor.handle
            handle(msg, pending)
            last[(name, msg.partition())] = msg.offset()
        return i

    def settle(self) -> None:
        """Close the open segment: its messages enter the tracker, processed."""
        last = self._last
        if not last:
            return
        pending = self._pending
        for tp, offset in last.items():
            self.tracker.track(tp, offset, pending)
        pending.done()
        self._pending, self._last = Pending(), {}

    def completed(self) -> list[TopicPartition]:
        """At-least-once: the offsets to store now (see :meth:`OffsetTracker.completed`)."""
        self.settle()
        return self.tracker.completed()

    def waiting_since(self) -> float | None:
        """See :meth:`OffsetTracker.waiting_since`."""
        return self.tracker.waiting_since()

    def processed_positions(self) -> list[TopicPartition]:
        """Exactly-once: the offsets to commit with the open transaction (see :meth:`OffsetTracker.processed_positions`)."""
        self.settle()
        return self.tracker.processed_positions()

    def inflight(self) -> bool:
        """Whether handled messages still wait to be stored or committed."""
        return bool(self._last) or self.tracker.inflight() > 0

    def _run_batch(self, route: Route) -> None:
        msgs = route.buffer
        if not msgs:
            return
        route.buffer = []
        pending = Pending()
        route.processor.handle_batch(msgs, pending)
        last: dict[TP, int] = {}
        for msg in msgs:
            last[(msg.topic(), msg.partition())] = msg.offset()
        for tp, offset in last.items():
            self.tracker.track(tp, offset, pending)
        pending.done()

    def end_batch(self) -> None:
        """A polled batch went through: apply it to states, send what sinks buffered for it."""
        for route in self._stateful:
            self._run_batch(route)
        for writer in self.writers:
            writer.end_batch()
        for processor in self.processors:
            processor.metrics.flush()

    def tick(self) -> None:
        """Time-based work: due batches, sink flushes, delivery reports."""
        if self._has_batches:
            now = time.monotonic()
            for route in self.routes.values():
                if route.buffer and now - route.started >= route.batch_wait_s:
                    self._run_batch(route)
        for writer in self.writers:
            writer.tick()
        for processor in self.processors:
            processor.metrics.flush()

    def flush_batches(self) -> None:
        """Handle every open batch now (shutdown), and count them."""
        for route in self.routes.values():
            self._run_batch(route)
        for processor in self.processors:
            processor.metrics.flush()

    def flush_sinks(self, timeout: float) -> None:
        for writer in self.writers:
            writer.end_batch()
            writer.flush(timeout)

    def drop(self, tps: Iterable[TP]) -> None:
        """Forget partitions this process lost: their open batch messages and tracked offsets."""
        lost = set(tps)
        for route in self.routes.values():
            if route.buffer:
                route.buffer = [m for m in route.buffer if (m.topic(), m.partition()) not in lost]
        for tp in lost:
            self._last.pop(tp, None)
        self.tracker.forget(lost)

    def reset(self) -> None:
        """Forget every open batch and tracked offset (exactly-once, after an abort: all is read again)."""
        for route in self.routes.values():
            route.buffer = []
        self._pending, self._last = Pending(), {}
        self.tracker.forget_all()

    def close(self) -> None:
        for writer in self.writers:
            writer.close()
        if self._states is not None:
            self._states.close()
