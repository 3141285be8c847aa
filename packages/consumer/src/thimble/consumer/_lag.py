"""How far a consumer group is behind: committed offset, end offset and lag per partition."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from thimble.consumer._kafka import committed_offsets, kafka_client, kafka_log
from thimble.consumer.config import ConsumerSettings
from thimble.consumer.errors import ServiceUnavailableError, TopicMissingError


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """One partition of a group: its committed offset (``None`` before the first commit), the end
    offset (high watermark) and the messages in between."""

    topic: str
    partition: int
    committed: int | None
    high: int

    @property
    def lag(self) -> int:
        return max(self.high - (self.committed or 0), 0)

    def as_dict(self) -> dict[str, Any]:
        """``topic, partition, committed, end, lag`` (what ``thimble-consumer lag --json`` prints)."""
        return {
            "topic": self.topic,
            "partition": self.partition,
            "committed": self.committed,
            "end": self.high,
            "lag": self.lag,
        }


def group_lag(
    settings: ConsumerSettings, group_id: str, topics: Iterable[str], timeout_s: float = 10.0
) -> list[PartitionLag]:
    """Committed offset, end offset and lag of ``group_id`` on every partition of ``topics``.

    Reads only (it never joins the group). Raises :class:`TopicMissingError` for a topic that does not
    exist and :class:`ServiceUnavailableError` when the broker does not answer within ``timeout_s``.
    """
    conf: dict[str, Any] = {
        **settings.kafka.client_config(),
        "group.id": group_id,
        "enable.auto.commit": False,
        "logger": kafka_log,
    }
    consumer = kafka_client(Consumer, conf, settings)
    try:
        metadata = consumer.list_topics(timeout=timeout_s)
        tps = []
        for topic in dict.fromkeys(topics):
            if topic not in metadata.topics or metadata.topics[topic].error is not None:
                raise TopicMissingError(f"topic {topic!r} does not exist")
            tps += [TopicPartition(topic, p) for p in sorted(metadata.topics[topic].partitions)]
        if not tps:
            return []
        committed = {
            (tp.topic, tp.partition): tp.offset for tp in committed_offsets(consumer, tps, timeout_s)
        }
        out = []
        for tp in tps:
            _low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s)
            offset = committed.get((tp.topic, tp.partition))
            out.append(
                PartitionLag(
                    tp.topic, tp.partition, offset if offset is not None and offset >= 0 else None, high
                )
            )
        return out
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        raise ServiceUnavailableError(
            f"cannot read the lag of group {group_id!r} from Kafka at "
            f"{settings.kafka.bootstrap_servers}: {err.str() if err is not None else exc}"
        ) from None
    finally:
        consumer.close()
