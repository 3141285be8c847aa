"""The Redis compare-and-set of stateful handlers does what the harness's in-memory one does."""

from __future__ import annotations

import uuid

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thimble.consumer._state_store import MemoryStates, RedisStates, Write

pytestmark = pytest.mark.integration

# (entity, whether the writer read the current version, a field value)
writes = st.lists(st.tuples(st.integers(0, 2), st.booleans(), st.integers(0, 99)), min_size=1, max_size=30)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=writes)
def test_the_redis_compare_and_set_matches_the_in_memory_one(
    redis_url: str, ops: list[tuple[int, bool, int]]
) -> None:
    prefix = f"state-test-{uuid.uuid4().hex[:8]}"
    keys = [f"{prefix}:{n}" for n in range(3)]
    real, memory = RedisStates(redis_url), MemoryStates({})
    try:
        for entity, current, value in ops:
            key = keys[entity]
            [stored] = memory.read([key])
            version = int(stored.get("_version", b"0")) - (0 if current else 1)
            write: Write = (key, version, ["count", str(value), "_applied:t:0", str(value)], 0)
            assert real.write([write]) == memory.write([write])
        assert real.read(keys) == memory.read(keys)
    finally:
        real.client.delete(*keys)
        real.close()


def test_a_ttl_expires_the_entity(redis_url: str) -> None:
    key = f"state-test-{uuid.uuid4().hex[:8]}:ttl"
    states = RedisStates(redis_url)
    try:
        assert states.write([(key, 0, ["count", "1"], 3600)]) == [True]
        assert 0 < redis.Redis.from_url(redis_url).ttl(key) <= 3600
        assert states.write([(key, 0, ["count", "2"], 0)]) == [False]  # read before the first write
        assert states.read([key]) == [{"count": b"1", "_version": b"1"}]
    finally:
        states.client.delete(key)
        states.close()
