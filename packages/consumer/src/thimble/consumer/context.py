"""What a handler may receive besides its message, and how it may shape an output."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Context:
    """Where a message came from. Declare a parameter typed ``Context`` (``list[Context]`` in batches)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    timestamp_ms: int | None = None

    @property
    def key_str(self) -> str | None:
        """The key decoded as UTF-8 (``None`` without a key)."""
        return None if self.key is None else self.key.decode("utf-8", "replace")

    @property
    def timestamp(self) -> datetime | None:
        """The Kafka record timestamp as an aware UTC datetime."""
        return None if self.timestamp_ms is None else datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)

    def header(self, name: str) -> bytes | None:
        """The last value of header ``name``, or ``None``."""
        for key, value in reversed(self.headers):
            if key == name:
                return value
        return None


@dataclass(frozen=True, slots=True)
class Output:
    """An output with an explicit key or headers: ``return Output(features, key=str(client_id))``."""

    value: Any
    key: str | bytes | int | None = None
    headers: dict[str, str | bytes] = field(default_factory=dict)
