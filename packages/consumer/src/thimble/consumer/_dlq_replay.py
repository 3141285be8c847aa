"""Re-feed dead letters to the topics they came from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from thimble.consumer._dead_letters import ORIGINAL_TOPIC, PREFIX, REPLAYED_FROM
from thimble.consumer._kafka import kafka_log, producer_config
from thimble.consumer.config import ConsumerSettings
from thimble.consumer.errors import DeliveryError, TopicMissingError


@dataclass(slots=True)
class ReplayReport:
    replayed: int = 0
    skipped: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)


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
    """Produce every dead letter of ``dlq_topic`` (up to its end now) back to its original topic.

    Progress is committed under the group ``thimble-dlq-replay.<dlq_topic>``, so a second replay only
    re-feeds dead letters that arrived since. Dead-letter headers are removed; ``thimble.replayed.from``
    names the dead letter.
    """
    group = f"thimble-dlq-replay.{dlq_topic}"
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "logger": kafka_log,
        }
    )
    producer = Producer(producer_config(settings, "thimble-dlq-replay"))
    report = ReplayReport()
    failures: list[str] = []

    def delivered(err: object, msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    try:
        metadata = consumer.list_topics(dlq_topic, timeout=10).topics.get(dlq_topic)
        if metadata is None or metadata.error is not None:
            raise TopicMissingError(f"dead-letter topic {dlq_topic!r} does not exist")
        tps = [TopicPartition(dlq_topic, p) for p in sorted(metadata.partitions)]
        committed = {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=10)}
        ends: dict[int, int] = {}
        starts: list[TopicPartition] = []
        for tp in tps:
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            start = committed.get(tp.partition, -1)
            start = low if start is None or start < low else start
            if start < high:
                ends[tp.partition] = high
                starts.append(TopicPartition(dlq_topic, tp.partition, start))
        consumer.assign(starts)
        done: dict[int, int] = {}
        while ends and (limit is None or report.replayed + report.skipped < limit):
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            if msg.error():
                raise KafkaException(msg.error())
            headers: list[tuple[str, Any]] = list(cast(Any, msg.headers()) or [])
            h: dict[str, bytes] = {
                k: v if isinstance(v, bytes) else str(v or "").encode() for k, v in headers
            }
            target = to or (h.get(ORIGINAL_TOPIC) or b"").decode()
            klass = (h.get("thimble.error.class") or b"").decode()
            if not target or (error_class is not None and error_class not in klass):
                report.skipped += 1
            else:
                if not dry_run:
                    kept = [(k, v) for k, v in headers if not k.startswith(PREFIX)]
                    kept.append((REPLAYED_FROM, f"{dlq_topic}/{msg.partition()}/{msg.offset()}".encode()))
                    producer.produce(target, msg.value(), msg.key(), headers=kept, on_delivery=delivered)
                    producer.poll(0)
                report.replayed += 1
                report.by_topic[target] = report.by_topic.get(target, 0) + 1
                if on_record is not None:
                    on_record(target, int(msg.offset() or 0), klass)
            partition, offset = int(msg.partition() or 0), int(msg.offset() or 0)
            done[partition] = offset + 1
            if done[partition] >= ends[partition]:
                del ends[partition]
        if not dry_run:
            if producer.flush(30) != 0 or failures:
                raise DeliveryError("some replayed records were not acknowledged; nothing was committed")
            if done:
                consumer.commit(
                    offsets=[TopicPartition(dlq_topic, p, o) for p, o in done.items()], asynchronous=False
                )
        return report
    finally:
        consumer.close()
