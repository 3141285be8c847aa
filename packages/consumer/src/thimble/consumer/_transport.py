"""Sending records to topics: through a Kafka producer, or into memory for the test harness."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import Producer

from thimble.consumer._delivery import Pending

Headers = list[tuple[str, bytes | None]]  # a header's value may be null


class Transport(Protocol):
    """Where topic sinks and dead letters send their records."""

    def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers | None, pending: Pending
    ) -> None: ...

    def poll(self) -> None: ...

    def flush(self, timeout: float) -> bool: ...


class KafkaTransport:
    """Asynchronous produce; ``pending`` is released by the delivery report.

    ``before_send`` runs before every produce (exactly-once: it opens the transaction if none is open,
    so every record, whichever path sends it, belongs to a transaction).
    """

    def __init__(self, producer: Producer, before_send: Callable[[], None] | None = None) -> None:
        self.producer = producer
        self.before_send = before_send

    def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers | None, pending: Pending
    ) -> None:
        if self.before_send is not None:
            self.before_send()
        pending.remaining += 1  # pending.hold(), inline: this runs once per output
        produce: Any = self.producer.produce
        while True:
            try:
                produce(topic, value, key, headers=headers, on_delivery=pending.on_delivery)
                return
            except BufferError:
                # The local queue is full: serve delivery reports until there is room.
                self.producer.poll(0.05)

    def direct_produce(self) -> Callable[..., None] | None:
        """The producer's own ``produce``, for a caller that sends many records and handles
        ``BufferError`` by falling back to :meth:`send`; ``None`` when every send must go through
        :meth:`send` (exactly-once: ``before_send``)."""
        return self.producer.produce if self.before_send is None else None

    def poll(self) -> None:
        self.producer.poll(0)

    def flush(self, timeout: float) -> bool:
        return int(self.producer.flush(timeout)) == 0


@dataclass(frozen=True, slots=True)
class SentRecord:
    """A record the harness captured."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes | None] = field(default_factory=dict)
    sent_at: float = field(default_factory=time.time)

    def json(self) -> Any:
        """The value parsed as JSON (``None`` for a tombstone)."""
        import orjson

        return None if self.value is None else orjson.loads(self.value)


class MemoryTransport:
    """Records kept in memory, acknowledged at once."""

    def __init__(self) -> None:
        self.records: dict[str, list[SentRecord]] = {}

    def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers | None, pending: Pending
    ) -> None:
        self.records.setdefault(topic, []).append(SentRecord(topic, key, value, dict(headers or [])))

    def poll(self) -> None:
        return

    def flush(self, timeout: float) -> bool:
        return True
