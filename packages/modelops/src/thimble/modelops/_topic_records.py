"""A topic's JSON records, from its beginning up to the end offsets it has when the read starts."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from thimble.common.config import CONSUMER_DEFAULTS
from thimble.modelops.errors import ModelOpsError


@dataclass
class TopicRecords:
    """What one read of a topic found, in the order read."""

    found: list[tuple[int, int, dict[str, Any]]]
    """(partition, offset, record) of each JSON object read."""
    complete: bool
    """False when the read stopped at its timeout, before the end offsets."""
    skipped: int = 0
    """Messages read (of the key asked for) that are not a JSON object."""


def read_json_records(
    kafka_config: dict[str, Any],
    topic: str,
    *,
    group: str,
    timeout_s: float,
    key: bytes | None = None,
) -> TopicRecords:
    """Every JSON object on ``topic`` (only those keyed ``key``, when given) up to its end offsets now.

    The read commits nothing (its consumer group is ``<group>-<random>``). A message that is not a JSON
    object is skipped; one with another key is skipped before it is decoded. A topic that cannot be read
    is a :class:`ModelOpsError`. A message that is not a JSON object is counted in ``skipped``.
    """
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

    consumer = Consumer(
        {
            **CONSUMER_DEFAULTS,
            **kafka_config,
            "group.id": f"{group}-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            # A partition's last offsets may be transaction markers, which are never delivered: its end
            # is known by this event, not by a record at the end offset.
            "enable.partition.eof": True,
        }
    )
    try:
        try:
            meta = consumer.list_topics(topic, timeout=10)
        except KafkaException as exc:
            raise ModelOpsError(f"cannot read topic {topic!r}: {exc}") from None
        info = meta.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            raise ModelOpsError(f"no topic {topic!r} on {kafka_config.get('bootstrap.servers')}")
        ends: dict[int, int] = {}
        starts: list[TopicPartition] = []
        for p in info.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
                starts.append(TopicPartition(topic, p, low))
        consumer.assign(starts)
        found: list[tuple[int, int, dict[str, Any]]] = []
        skipped = 0
        deadline = time.monotonic() + timeout_s
        while ends:
            if time.monotonic() > deadline:
                return TopicRecords(found, complete=False, skipped=skipped)
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    ends.pop(msg.partition() or 0, None)
                continue
            partition, offset = msg.partition() or 0, msg.offset() or 0
            if offset + 1 >= ends.get(partition, 0):
                ends.pop(partition, None)
            if key is not None and msg.key() != key:
                continue
            try:
                record = orjson.loads(msg.value() or b"")
            except orjson.JSONDecodeError:
                record = None
            if isinstance(record, dict):
                found.append((partition, offset, record))
            else:
                skipped += 1
        return TopicRecords(found, complete=True, skipped=skipped)
    finally:
        consumer.close()
