"""Where stateful handlers keep their state: the online store's hashes, read in one round trip and
written by compare-and-set on ``_version`` (a Lua script in Redis, a dict in the test harness)."""

from __future__ import annotations

from typing import Any, Protocol

from thimble.consumer._online_hash import VERSION_FIELD

# KEYS[1] entity hash; ARGV[1] the version read, ARGV[2] ttl seconds (0: none), ARGV[3..] field, value...
# Writes only when nobody wrote the hash since it was read; 1 when written, 0 when not.
COMPARE_AND_SET = """
local version = redis.call('HGET', KEYS[1], '_version')
if (version or '0') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], '_version', tostring(tonumber(ARGV[1]) + 1), unpack(ARGV, 3))
if tonumber(ARGV[2]) > 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 1
"""

Write = tuple[str, int, list[bytes | str], int]
"""A hash key, the version its state was read at, the fields to set, and the TTL in seconds (0: none)."""


class StateBackend(Protocol):
    def read(self, keys: list[str]) -> list[dict[str, bytes]]:
        """Each key's hash (empty when it has none)."""
        ...

    def write(self, writes: list[Write]) -> list[bool]:
        """Apply each write unless its hash changed since it was read; whether each was applied."""
        ...

    def close(self) -> None: ...


class RedisStates:
    """Hashes in Redis: reads in one pipeline of HGETALL, writes in one pipeline of the script."""

    def __init__(self, url: str, password: str | None = None) -> None:
        import redis

        self.client = redis.Redis.from_url(
            url, password=password, socket_timeout=10, socket_connect_timeout=5
        )
        self.script = self.client.register_script(COMPARE_AND_SET)

    def read(self, keys: list[str]) -> list[dict[str, bytes]]:
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        return [{k.decode(): v for k, v in stored.items()} for stored in pipe.execute()]

    def write(self, writes: list[Write]) -> list[bool]:
        pipe = self.client.pipeline(transaction=False)
        for key, version, fields, ttl in writes:
            self.script(keys=[key], args=[version, ttl, *fields], client=pipe)
        return [bool(done) for done in pipe.execute()]

    def close(self) -> None:
        self.client.close()


class MemoryStates:
    """The same compare-and-set over a dict of hashes (the test harness's online store)."""

    def __init__(self, hashes: dict[str, dict[str, bytes]]) -> None:
        self.hashes = hashes

    def read(self, keys: list[str]) -> list[dict[str, bytes]]:
        return [dict(self.hashes.get(key, {})) for key in keys]

    def write(self, writes: list[Write]) -> list[bool]:
        return [self._write(*w) for w in writes]

    def _write(self, key: str, version: int, fields: list[bytes | str], _ttl: int) -> bool:
        entry = self.hashes.get(key, {})
        if int(entry.get(VERSION_FIELD, b"0")) != version:
            return False
        entry = dict(entry)
        entry[VERSION_FIELD] = str(version + 1).encode()
        for name, value in zip(fields[::2], fields[1::2], strict=True):
            entry[str(name)] = _as_bytes(value)
        self.hashes[key] = entry
        return True

    def close(self) -> None:
        return


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()
