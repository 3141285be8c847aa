"""The online feature store sink: one Redis hash per entity, where the latest event time wins.

Contract (read by thimble-modelops; the layout is :mod:`thimble.common.features`): key
``{key_prefix}:{feature_set}:{entity}``, the entity as :func:`~thimble.consumer._online_hash.entity_text`
writes it; a hash with one field per output field, each value JSON (orjson), plus ``_event_time``
(epoch ms as a decimal string). An atomic Lua script compares event times, so a late event never
overwrites a newer one. An output that names no valid entity, or has a field of the store's own
(``_event_time``, ``_version``, ``_applied:*``), is refused before it is written: its input is
dead-lettered (a declared output type with such a field is refused at declaration:
:func:`thimble.consumer.sinks.check_output`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any, Protocol

from thimble.common.features import EVENT_TIME_FIELD, online_key
from thimble.common.logging import get_logger
from thimble.consumer._codec import epoch_ms, json_field, record_fields
from thimble.consumer._delivery import Pending
from thimble.consumer._online_hash import RESERVED, EntityError, entity_text, reserved
from thimble.consumer._writers import unwrap
from thimble.consumer.errors import SinkError
from thimble.consumer.sinks import OnlineStore

log = get_logger(__name__)

# KEYS[1] entity hash; ARGV[1] event time ms, ARGV[2] ttl seconds (0: none), ARGV[3..] field, value...
LATEST_WINS = f"""
local current = redis.call('HGET', KEYS[1], '{EVENT_TIME_FIELD}')
if current and tonumber(current) > tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], '{EVENT_TIME_FIELD}', ARGV[1], unpack(ARGV, 3))
if tonumber(ARGV[2]) > 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 1
"""

Update = tuple[str, int, list[bytes | str]]


class OnlineBackend(Protocol):
    def apply(self, updates: list[tuple[Update, int]]) -> None: ...

    def close(self) -> None: ...


class RedisBackend:
    """Applies updates in one pipeline of EVALSHA calls."""

    def __init__(self, url: str, password: str | None = None) -> None:
        import redis

        self.client = redis.Redis.from_url(
            url, password=password, socket_timeout=10, socket_connect_timeout=5
        )
        self.script = self.client.register_script(LATEST_WINS)

    def apply(self, updates: list[tuple[Update, int]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for (key, event_ms, fields), ttl in updates:
            self.script(keys=[key], args=[event_ms, ttl, *fields], client=pipe)
        pipe.execute()

    def close(self) -> None:
        self.client.close()


class MemoryOnlineStore:
    """The same latest-wins semantics in a dict (the test harness); values as Redis returns them."""

    def __init__(self) -> None:
        self.hashes: dict[str, dict[str, bytes]] = {}

    def apply(self, updates: list[tuple[Update, int]]) -> None:
        for (key, event_ms, fields), _ttl in updates:
            current = self.hashes.get(key)
            if current is not None and int(current[EVENT_TIME_FIELD]) > event_ms:
                continue
            entry = dict(current or {})
            entry[EVENT_TIME_FIELD] = str(event_ms).encode()
            for name, value in zip(fields[::2], fields[1::2], strict=True):
                entry[str(name)] = value if isinstance(value, bytes) else str(value).encode()
            self.hashes[key] = entry

    def close(self) -> None:
        return


class OnlineStoreWriter:
    """Buffers the updates of a polled batch and applies them together; retries Redis errors."""

    def __init__(
        self,
        spec: OnlineStore,
        prefix: str,
        backend: OnlineBackend,
        attempts: int = 5,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        self.label = spec.feature_set
        self.spec = spec
        self.prefix = prefix
        self.backend = backend
        self.attempts = attempts
        self.sleep = sleep
        self.ttl = spec.ttl_s or 0
        self._buffer: list[tuple[Update, int]] = []
        self._pending: list[Pending] = []

    def prepare(self, output: Any, msg: Any) -> Update:
        fields = record_fields(unwrap(output)[0])
        if self.spec.entity_key not in fields:
            raise KeyError(f"output has no field {self.spec.entity_key!r} (the OnlineStore entity_key)")
        if self.spec.event_time is not None:
            if self.spec.event_time not in fields:
                raise KeyError(f"output has no field {self.spec.event_time!r} (the OnlineStore event_time)")
            event_ms = epoch_ms(fields[self.spec.event_time])
        else:
            event_ms = msg.timestamp()[1]
        try:
            entity = entity_text(fields[self.spec.entity_key])
        except EntityError as exc:
            raise EntityError(
                f"OnlineStore {self.label!r}, entity_key {self.spec.entity_key!r}: {exc}"
            ) from None
        flat: list[bytes | str] = []
        for name, value in fields.items():
            if name[:1] == "_" and reserved(name):  # the cheap test first: a call per field is dearer
                raise ValueError(
                    f"OnlineStore {self.label!r}: output field {name!r} is one of the store's own fields "
                    f"({RESERVED}); rename it"
                )
            flat.append(name)
            flat.append(json_field(value))
        return online_key(self.prefix, self.spec.feature_set, entity), event_ms, flat

    def write(self, prepared: Update, pending: Pending) -> None:
        pending.hold()
        self._buffer.append((prepared, self.ttl))
        self._pending.append(pending)

    def end_batch(self) -> None:
        if not self._buffer:
            return
        buffer, pending, self._buffer, self._pending = self._buffer, self._pending, [], []
        for attempt in range(1, self.attempts + 1):
            try:
                self.backend.apply(buffer)
            except Exception as exc:
                if attempt == self.attempts:
                    error = SinkError(f"online store {self.label!r}: {type(exc).__name__}: {exc}")
                    for p in pending:
                        p.fail(error)
                    return
                delay = min(5.0, 0.1 * 2**attempt) * (0.5 + random.random() / 2)
                log.warning(
                    "online store write failed, retrying",
                    extra={
                        "feature_set": self.label,
                        "attempt": attempt,
                        "error": str(exc),
                        "retry_in_s": round(delay, 2),
                    },
                )
                self.sleep(delay)
            else:
                for p in pending:
                    p.release()
                return

    def tick(self) -> None:
        self.end_batch()

    def flush(self, timeout: float) -> None:
        self.end_batch()

    def close(self) -> None:
        self.backend.close()
