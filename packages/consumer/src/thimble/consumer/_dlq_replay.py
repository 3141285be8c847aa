"""Re-feed dead letters to the topics they came from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from thimble.common.config import CONSUMER_DEFAULTS
from thimble.consumer._dead_letters import ERROR_CLASS, ORIGINAL_TOPIC, PREFIX, REPLAYED_FROM
from thimble.consumer._kafka import committed_offsets, kafka_log, producer_config
from thimble.consumer.config import ConsumerSettings
from thimble.consumer.errors import DeliveryError, ServiceUnavailableError, TopicMissingError

POLL_BATCH = 500
POLL_TIMEOUT_S = 1.0
FLUSH_TIMEOUT_S = 30.0


@dataclass(slots=True)
class ReplayReport:
    replayed: int = 0
    skipped: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Partition:
    """Replay state of one dead-letter partition."""

    end: int  # the last stable offset when the replay started: where it stops
    commit: int  # the offset to commit: every dead letter before it was replayed
    held: bool = False  # a dead letter was skipped: the commit stays before it

    def handled(self, offset: int, skipped: bool) -> None:
        self.held = self.held or skipped
        if not self.held:
            self.commit = offset + 1

    def reached(self, position: int) -> bool:
        """The partition read up to ``position`` (past control records too); ``True`` when at its end."""
        if position < self.end:
            return False
        if not self.held:
            self.commit = max(self.commit, self.end)
        return True


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
    replayed letters behind it). Dead-letter headers are removed; ``thimble.replayed.from`` names the
    dead letter. A tombstone stays a tombstone.
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
        self.failures: list[str] = []
        self.consumer = Consumer(
            {
                **CONSUMER_DEFAULTS,
                **settings.kafka.client_config(),
                "group.id": f"thimble-dlq-replay.{dlq_topic}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
                "logger": kafka_log,
            }
        )
        self.producer = Producer(producer_config(settings, "thimble-dlq-replay"))

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
            err = exc.args[0] if exc.args else None
            reason = err.str() if isinstance(err, KafkaError) else str(exc)
            raise ServiceUnavailableError(
                f"cannot read where the replay of {self.topic!r} stands (its committed offsets and end): {reason}"
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
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        raise KafkaException(err)
                    if self.parts[partition].reached(int(msg.offset() or 0)):
                        reading.discard(partition)
                    continue
                if self._limit_reached():
                    break
                offset = int(msg.offset() or 0)
                target = self._send(msg)
                self.parts[partition].handled(offset, skipped=target is None)
                if self.parts[partition].reached(offset + 1):
                    reading.discard(partition)
                if target is not None and self.on_record is not None:
                    self.on_record(target, offset, _header(msg, ERROR_CLASS))
            self._checkpoint()

    def _limit_reached(self) -> bool:
        return self.limit is not None and self.report.replayed >= self.limit

    def _send(self, msg: Any) -> str | None:
        """Produce one dead letter back (unless a dry run): its target, or ``None`` when skipped."""
        target = self.to or _header(msg, ORIGINAL_TOPIC)
        klass = _header(msg, ERROR_CLASS)
        if not target or (self.error_class is not None and self.error_class not in klass):
            self.report.skipped += 1
            return None
        headers: list[tuple[str, Any]] = list(cast(Any, msg.headers()) or [])
        if not self.dry_run:
            kept = [(k, v) for k, v in headers if not k.startswith(PREFIX)]
            kept.append((REPLAYED_FROM, f"{self.topic}/{msg.partition()}/{msg.offset()}".encode()))
            self.producer.produce(target, msg.value(), msg.key(), headers=kept, on_delivery=self._delivered)
            self.producer.poll(0)
        self.report.replayed += 1
        self.report.by_topic[target] = self.report.by_topic.get(target, 0) + 1
        return target

    def _delivered(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            self.failures.append(err.str())

    def _checkpoint(self) -> None:
        """Wait for every replayed record's acknowledgement, then commit the progress."""
        if self.dry_run or not self.parts:
            return
        if self.producer.flush(FLUSH_TIMEOUT_S) != 0 or self.failures:
            raise DeliveryError(
                "some replayed records were not acknowledged; their dead letters stay to be replayed"
                + (f" ({self.failures[0]})" if self.failures else "")
            )
        offsets = [TopicPartition(self.topic, p, s.commit) for p, s in self.parts.items() if s.commit >= 0]
        if offsets:
            self.consumer.commit(offsets=offsets, asynchronous=False)


def _header(msg: Any, name: str) -> str:
    for key, value in msg.headers() or ():
        if key == name:
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")
    return ""
