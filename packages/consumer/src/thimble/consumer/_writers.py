"""What every sink writer does, and the topic writer (the simplest sink)."""

from __future__ import annotations

from typing import Any, Protocol

from thimble.consumer._codec import encode_headers, encode_key, encode_value
from thimble.consumer._delivery import Pending
from thimble.consumer._transport import Headers, Transport
from thimble.consumer.context import Output


class SinkWriter(Protocol):
    """Turns outputs into durable writes; releases a message's :class:`Pending` once durable."""

    label: str

    def prepare(self, output: Any, msg: Any) -> Any:
        """Encode one output (raises on an output the sink cannot take: the message is dead-lettered)."""

    def write(self, prepared: Any, pending: Pending) -> None:
        """Write (or buffer) one prepared output."""

    def end_batch(self) -> None:
        """A polled batch is dispatched: write what was buffered for it."""

    def tick(self) -> None:
        """Called regularly, also when idle (time-based flushes)."""

    def flush(self, timeout: float) -> None:
        """Make everything written so far durable (rebalance, shutdown)."""

    def close(self) -> None:
        """Release resources."""


def unwrap(output: Any) -> tuple[Any, Output | None]:
    """The value of an output, and its :class:`Output` wrapper if it has one."""
    if isinstance(output, Output):
        return output.value, output
    return output, None


class TopicWriter:
    """Outputs as records of a Kafka topic; the key defaults to the input record's key."""

    def __init__(self, topic: str, transport: Transport) -> None:
        self.label = topic
        self.topic = topic
        self.transport = transport

    def prepare(self, output: Any, msg: Any) -> tuple[bytes | None, bytes, Headers | None]:
        if type(output) is Output:
            key = encode_key(output.key) if output.key is not None else msg.key()
            return key, encode_value(output.value), encode_headers(output.headers)
        return msg.key(), encode_value(output), None

    def write(self, prepared: tuple[bytes | None, bytes, Headers | None], pending: Pending) -> None:
        key, value, headers = prepared
        self.transport.send(self.topic, key, value, headers, pending)

    def end_batch(self) -> None:
        self.transport.poll()

    def tick(self) -> None:
        self.transport.poll()

    def flush(self, timeout: float) -> None:
        self.transport.flush(timeout)

    def close(self) -> None:
        return
