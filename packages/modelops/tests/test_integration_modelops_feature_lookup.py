"""Online feature lookups shared by concurrent requests, on the real Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thimble.common.config import OnlineStoreConfig
from thimble.modelops.envelope import FeatureSpec
from thimble.modelops.errors import FeatureLookupError
from thimble.modelops.features import OnlineFeatures, store_client

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


def test_a_read_cut_short_never_leaves_its_answer_for_the_next_one(redis_url: str, prefix: str) -> None:
    """Reads that time out after their command went out, each followed by a read of another client."""

    async def scenario() -> tuple[int, list[int]]:
        features = OnlineFeatures(SPEC, OnlineStoreConfig(url=redis_url, key_prefix=prefix), timeout_s=2.0)
        cut_short, answers = 0, []
        for _ in range(300):
            features.timeout_s = 0.00005
            try:
                await features.fill([{"client_id": 1}])
            except FeatureLookupError:
                cut_short += 1
            features.timeout_s = 2.0
            record: dict[str, Any] = {"client_id": 2}
            await features.fill([record])
            answers.append(record["orders_7d"])
        await features.close()
        return cut_short, answers

    cut_short, answers = asyncio.run(scenario())
    assert cut_short > 0
    assert set(answers) == {20}


def test_a_connection_the_store_dropped_is_reconnected_without_failing_a_request(
    redis_url: str, prefix: str
) -> None:
    """As after a restart of the store: the reader's idle connection is gone before each read."""
    spec = SPEC.model_copy(update={"feature_set": f"features-{uuid.uuid4().hex[:8]}"})
    admin = redis.Redis.from_url(redis_url)
    for client_id in (1, 2, 3):
        admin.hset(f"{prefix}:{spec.feature_set}:{client_id}", mapping={"orders_7d": client_id * 10})

    name = f"thimble-test-{uuid.uuid4().hex[:8]}"

    async def scenario() -> tuple[list[int], int]:
        store = OnlineStoreConfig(url=redis_url, key_prefix=prefix)
        features = OnlineFeatures(spec, store, client=store_client(store, 0.2, client_name=name))
        answers, killed = [], 0
        for client_id in (1, 2, 3):
            for connection in admin.client_list():
                if connection.get("name") == name:
                    admin.client_kill_filter(_id=connection["id"])
                    killed += 1
            record: dict[str, Any] = {"client_id": client_id}
            await features.fill([record])
            answers.append(record["orders_7d"])
        await features.close()
        return answers, killed

    try:
        answers, killed = asyncio.run(scenario())
    finally:
        admin.close()
    assert killed == 2
    assert answers == [10, 20, 30]


def test_a_store_user_allowed_only_to_read_is_enough(redis_url: str, prefix: str) -> None:
    user, password = f"thimble-test-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    admin = redis.Redis.from_url(redis_url)
    admin.acl_setuser(
        user,
        enabled=True,
        passwords=[f"+{password}"],
        keys=[f"{prefix}:*"],
        commands=["-@all", "+hmget", "+ping"],
    )

    async def scenario() -> tuple[list[dict[str, Any]], bool]:
        store = OnlineStoreConfig(
            url=redis_url.replace("redis://", f"redis://{user}@", 1), password=password, key_prefix=prefix
        )
        features = OnlineFeatures(SPEC, store)
        records: list[dict[str, Any]] = [{"client_id": 1}, {"client_id": 2}]
        await features.fill(records)
        ready = await features.ping()
        await features.close()
        return records, ready

    try:
        records, ready = asyncio.run(scenario())
    finally:
        admin.acl_deluser(user)
        admin.close()
    assert records == [{"client_id": 1, "orders_7d": 10}, {"client_id": 2, "orders_7d": 20}]
    assert ready


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    entities=st.lists(st.text() | st.integers(), min_size=1, max_size=6),
    fields=st.lists(st.from_regex(r"[^\W\d]\w{0,12}", fullmatch=True), min_size=1, max_size=4, unique=True),
)
def test_any_entity_and_field_names_read_back_what_the_store_holds(
    redis_url: str, prefix: str, entities: list[str | int], fields: list[str]
) -> None:
    spec = FeatureSpec(feature_set="client-features", entity_key="client_id", fields=fields)
    writer = redis.Redis.from_url(redis_url)
    stored = {e: {f: [str(e), i] for i, f in enumerate(fields) if i % 2 == 0} for e in entities}
    for e, values in stored.items():
        writer.delete(f"{prefix}:client-features:{e}")
        if values:
            writer.hset(
                f"{prefix}:client-features:{e}", mapping={f: orjson.dumps(v) for f, v in values.items()}
            )
    writer.close()

    async def scenario() -> list[Any]:
        features = OnlineFeatures(spec, OnlineStoreConfig(url=redis_url, key_prefix=prefix))
        try:
            return await asyncio.gather(
                *(features._lookup([e]) for e in entities), features._lookup(entities)
            )
        finally:
            await features.close()

    *each, together = asyncio.run(scenario())
    expected = [[orjson.dumps(stored[e][f]) if f in stored[e] else None for f in fields] for e in entities]
    assert [values for [values] in each] == expected
    assert together == expected
