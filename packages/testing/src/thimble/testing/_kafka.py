"""Producing to and reading from a real Kafka topic in tests."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any
from uuid import uuid4

import orjson
from confluent_kafka import Consumer, Message, Producer

from thimble.testing._wait import wait_until


def produce(
    kafka_config: dict[str, Any],
    topic: str,
    records: Iterable[tuple[Any, Any]],
    *,
    partitions: int | None = None,
    **produce_kw: Any,
) -> None:
    """Produce ``(key, value)`` pairs and wait until the broker acknowledged every one (``acks=all``).

    A value is sent as is when bytes, as a tombstone when None, else as JSON; a key as is when bytes or
    None, else as its text. ``partitions=N`` puts record ``i`` on partition ``i % N`` instead of leaving
    the choice to the partitioner.
    """
    producer = Producer({**kafka_config, "acks": "all", "linger.ms": 5})
    failures: list[Any] = []
    for i, (key, value) in enumerate(records):
        raw = value if value is None or isinstance(value, bytes) else orjson.dumps(value)
        raw_key = key if key is None or isinstance(key, bytes) else str(key).encode()
        if partitions is not None:
            produce_kw["partition"] = i % partitions
        producer.produce(
            topic,
            raw,
            raw_key,
            on_delivery=lambda err, _msg: failures.append(err) if err else None,
            **produce_kw,
        )
        producer.poll(0)
    assert producer.flush(30) == 0, f"records for {topic} still unacknowledged after 30 s"
    assert not failures, f"producing to {topic} failed: {failures[:3]}"


class TopicReader:
    """Reads a topic from its beginning (read_committed), in a group of its own, and keeps all it saw."""

    def __init__(self, kafka_config: dict[str, Any], topic: str) -> None:
        self.topic = topic
        self.records: list[Message] = []
        self._consumer = Consumer(
            {
                **kafka_config,
                "group.id": f"reader-{uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        self._consumer.subscribe([topic])

    def poll(self) -> list[Message]:
        """Every record seen so far, after reading what arrived in the next 0.2 s."""
        for msg in self._consumer.consume(1000, 0.2):
            if msg.error() is None:
                self.records.append(msg)
        return self.records

    def wait_for(self, count: int, timeout: float = 30) -> list[Message]:
        """Every record seen, once there are at least ``count``; fails the test after ``timeout`` seconds."""
        return self.wait_until(
            lambda: len(self.records) >= count,
            timeout,
            what=f"{count} records on {self.topic} (have {len(self.records)})",
        )

    def wait_until(self, done: Callable[[], object], timeout: float = 30, what: str = "") -> list[Message]:
        """Keep reading until ``done()`` (which looks at ``records`` or ``values()``) is true; every record seen."""

        def read_and_check() -> object:
            self.poll()
            return done()

        wait_until(read_and_check, timeout, what=what or f"the records awaited on {self.topic}")
        return self.records

    def values(self) -> list[Any]:
        """The JSON values of the records seen so far (None for a tombstone)."""
        return [None if (raw := msg.value()) is None else orjson.loads(raw) for msg in self.records]

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
