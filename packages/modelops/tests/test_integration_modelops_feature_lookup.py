"""Online feature lookups shared by concurrent requests, on the real Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis

from thimble.common.config import OnlineStoreConfig
from thimble.modelops.envelope import FeatureSpec
from thimble.modelops.features import OnlineFeatures

pytestmark = pytest.mark.integration

SPEC = FeatureSpec(feature_set="client-features", entity_key="client_id", fields=["orders_7d"])


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_url)
    for client_id in (1, 2, 3):
        client.hset(
            f"{prefix}:client-features:{client_id}", mapping={"orders_7d": orjson.dumps(client_id * 10)}
        )
    yield prefix
    client.delete(*client.scan_iter(f"{prefix}:*"))
    client.close()


@pytest.mark.parametrize("turns_before_cancel", [0, 1, 2])
def test_a_cancelled_request_never_takes_the_answers_of_those_sharing_its_round_trip(
    redis_url: str, prefix: str, turns_before_cancel: int
) -> None:
    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        features = OnlineFeatures(SPEC, OnlineStoreConfig(url=redis_url, key_prefix=prefix), timeout_s=2.0)
        first: list[dict[str, Any]] = [{"client_id": 1}]
        others: list[dict[str, Any]] = [{"client_id": 2}, {"client_id": 3}]
        leader = asyncio.create_task(features.fill(first))
        joiner = asyncio.create_task(features.fill(others))
        for _ in range(turns_before_cancel):
            await asyncio.sleep(0)
        leader.cancel()  # the client of the first request went away, at any point of the round trip
        await asyncio.wait_for(joiner, timeout=5)
        with pytest.raises(asyncio.CancelledError):
            await leader
        after = [{"client_id": 1}]
        await features.fill(after)  # the reader is still usable
        await features.close()
        return others, after

    others, after = asyncio.run(scenario())
    assert others == [{"client_id": 2, "orders_7d": 20}, {"client_id": 3, "orders_7d": 30}]
    assert after == [{"client_id": 1, "orders_7d": 10}]
