"""What a handler may receive besides its message, and how it may shape an output."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from thimble.consumer.config import ConsumerSettings
from thimble.consumer.errors import ConsumerError

if TYPE_CHECKING:
    import redis


class Resources:
    """The settings a consumer runs with and the clients it shares with its handlers."""

    def __init__(self, settings: ConsumerSettings) -> None:
        self.settings = settings
        self._redis: redis.Redis | None = None
        self._lock = threading.Lock()

    @property
    def redis(self) -> redis.Redis:
        """A Redis client of the configured online store (``online_store.url``), made on first use."""
        with self._lock:
            if self._redis is None:
                import redis

                store = self.settings.online_store
                self._redis = redis.Redis.from_url(
                    store.url,
                    password=store.password.get_secret_value() if store.password else None,
                    socket_timeout=10,
                    socket_connect_timeout=5,
                )
            return self._redis

    def close(self) -> None:
        with self._lock:
            if self._redis is not None:
                self._redis.close()
                self._redis = None


_running: Resources | None = None


def serve(settings: ConsumerSettings) -> Resources:
    """Make ``settings`` (and clients made from them) what handlers of this process see in their Context."""
    global _running
    if _running is not None and _running.settings is not settings:
        _running.close()
    if _running is None or _running.settings is not settings:
        _running = Resources(settings)
    return _running


def running() -> Resources:
    """The resources of the consumer running in this process."""
    if _running is None:
        raise ConsumerError("no consumer runs in this process; Context.settings exists inside handlers")
    return _running


@dataclass(frozen=True, slots=True)
class Context:
    """Where a message came from, and what the consumer runs with.

    Declare a parameter typed ``Context`` (``list[Context]`` in batches). ``ctx.settings`` are the
    settings the consumer runs with (``--config``, environment, flags); ``ctx.redis`` is a client of
    the configured online store, shared by the handlers of the process.
    """

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

    @property
    def settings(self) -> ConsumerSettings:
        """The settings of the running consumer."""
        return running().settings

    @property
    def redis(self) -> redis.Redis:
        """A Redis client of the running consumer's online store."""
        return running().redis

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
    headers: dict[str, str | bytes | None] = field(default_factory=dict)
