"""Sending records to topics: through a Kafka producer, or into memory for the test harness."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Producer

from thimble.consumer._delivery import Pending
from thimble.consumer.errors import RecordTooLarge

Headers = list[tuple[str, bytes | None]]  # a header's value may be null
# ``produce(topic, value, key, ANY_PARTITION, on_delivery)``: passed by position on the hot paths, as
# keyword arguments cost the call a dictionary (about 0.15 µs of the 1 µs a produce takes).
ANY_PARTITION = -1


def too_large(exc: KafkaException, topic: str, size: int) -> RecordTooLarge | None:
    """The :class:`RecordTooLarge` a produce refused for its size raised, else ``None``."""
    err = exc.args[0] if exc.args else None
    if not isinstance(err, KafkaError) or err.code() != KafkaError.MSG_SIZE_TOO_LARGE:
        return None
    return refused_for_size(topic, size)


def refused_for_size(topic: str, size: int) -> RecordTooLarge:
    return RecordTooLarge(
        f"a record of {size} bytes for topic {topic!r} is larger than the producer may send "
        "(message.max.bytes, set in consumer.producer_extra)"
    )


def record_size(key: bytes | None, value: bytes | None, headers: Headers | None = None) -> int:
    size = len(key or b"") + len(value or b"")
    return size + sum(len(k) + len(v or b"") for k, v in headers or ())


class Transport(Protocol):
    """Where topic sinks and dead letters send their records."""

    def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers | None, pending: Pending
    ) -> None:
        """Send one record held by ``pending``; :class:`RecordTooLarge` (``pending`` not held) when the
        producer refuses it for its size."""

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
                if headers is None:
                    produce(topic, value, key, ANY_PARTITION, pending)
                else:
                    produce(topic, value, key, ANY_PARTITION, pending, headers=headers)
                return
            except BufferError:
                # The local queue is full: serve delivery reports until there is room.
                self.producer.poll(0.05)
            except KafkaException as exc:
                pending.remaining -= 1
                refused = too_large(exc, topic, record_size(key, value, headers))
                if refused is None:
                    raise
                raise refused from None

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
    """Records kept in memory, acknowledged at once; a record above ``max_bytes`` (the producer's
    default ``message.max.bytes``) is refused as the producer would refuse it."""

    def __init__(self, max_bytes: int = 1_000_000) -> None:
        self.records: dict[str, list[SentRecord]] = {}
        self.max_bytes = max_bytes

    def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers | None, pending: Pending
    ) -> None:
        size = record_size(key, value, headers)
        if size > self.max_bytes:
            raise refused_for_size(topic, size)
        self.records.setdefault(topic, []).append(SentRecord(topic, key, value, dict(headers or [])))

    def poll(self) -> None:
        return

    def flush(self, timeout: float) -> bool:
        return True
