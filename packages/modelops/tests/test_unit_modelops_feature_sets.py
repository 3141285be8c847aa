"""``@model(features=<FeatureSet>)``, and the online store's writer (thimble-consumer) and reader agree."""

from __future__ import annotations

import asyncio
import re
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from thimble.common.config import OnlineStoreConfig
from thimble.common.features import EVENT_TIME_FIELD, FeatureSet
from thimble.consumer import OnlineStore
from thimble.consumer._online_store import MemoryOnlineStore, OnlineStoreWriter
from thimble.modelops import ModelContext, Registry, model
from thimble.modelops.errors import ModelDefinitionError
from thimble.modelops.features import OnlineFeatures

pytestmark = pytest.mark.unit


class ClientFeatures(BaseModel):
    client_id: str
    event_time: datetime
    orders: int = 0
    total_spent: float = 0.0
    avg_rating: float | None = None
    last_channel: str | None = None


class RiskInput(BaseModel):
    client_id: str
    orders: int = 0
    total_spent: float
    avg_rating: float | None = None
    coupon: bool = False  # sent with the request, never in the store


class Risk(BaseModel):
    risk: float


client_features = FeatureSet(
    "client-features", ClientFeatures, entity_key="client_id", event_time="event_time"
)


def _risk(ctx: ModelContext, rows: list[RiskInput]) -> list[Risk]:
    return [Risk(risk=min(1.0, r.orders / 10)) for r in rows]


def test_a_feature_set_gives_the_entity_key_and_the_fields_it_fills() -> None:
    risk = model("risk", features=client_features)(_risk)
    assert risk.features is not None
    assert risk.features.feature_set == "client-features"
    assert risk.features.entity_key == "client_id"
    assert risk.features.fields == ["orders", "total_spent", "avg_rating"]
    assert risk.features.defaults == {"orders": 0, "avg_rating": None}


def test_a_name_still_fills_every_other_input_field() -> None:
    risk = model("risk", features="client-features")(_risk)
    assert risk.features is not None
    assert risk.features.fields == ["orders", "total_spent", "avg_rating", "coupon"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"feature_fields": ["orders", "coupon"]},
            "coupon are not features of feature set 'client-features'",
        ),
        ({"feature_fields": []}, "no field of the input is features of feature set 'client-features'"),
        ({"entity_key": "client"}, "client not fields of RiskInput"),
    ],
)
def test_fields_outside_the_feature_set_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ModelDefinitionError, match=re.escape(message)):
        model("risk", features=client_features, **kwargs)(_risk)


@pytest.mark.parametrize("name", ["a:b", "../x", "a b", ""])
def test_an_unsafe_feature_set_name_is_refused_in_one_line(name: str) -> None:
    with pytest.raises(ModelDefinitionError) as error:
        model("risk", features=name)(_risk)
    assert f"features= {name!r} is not a valid name" in str(error.value)
    assert "\n" not in str(error.value)


class OrderInput(BaseModel):
    client_id: str
    orders: int = 0


@pytest.fixture
def feature_set_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A module defining a FeatureSet (on ``sys.path`` until the test takes it away)."""
    name = f"defs_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        "from datetime import datetime\n"
        "from pydantic import BaseModel\n"
        "from thimble.common.features import FeatureSet\n"
        "class Orders(BaseModel):\n"
        "    client_id: str\n"
        "    at: datetime\n"
        "    orders: int = 0\n"
        "orders = FeatureSet('order-counts', Orders, entity_key='client_id', event_time='at')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield __import__(name)
    sys.modules.pop(name, None)


def test_a_saved_model_records_the_name_and_loads_without_the_feature_set(
    feature_set_module: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    @model("order-risk", features=feature_set_module.orders)
    def order_risk(ctx: ModelContext, rows: list[OrderInput]) -> list[Risk]:
        return [Risk(risk=r.orders / 10) for r in rows]

    registry = Registry(str(tmp_path / "models"))
    registry.save(order_risk, pickle_function=True)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path)])
    monkeypatch.delitem(sys.modules, feature_set_module.__name__)  # the definition cannot be imported now
    loaded = registry.load("order-risk@1")
    assert loaded.info is not None
    assert loaded.info.features is not None
    assert loaded.info.features.feature_set == "order-counts"
    assert loaded.features is not None
    assert loaded.features.fields == ["orders"]
    assert loaded.predict([{"client_id": "c1", "orders": 5}]) == [{"risk": 0.5}]


class _StoreClient:
    """Reads the consumer's in-memory online store the way a redis-py async connection answers."""

    def __init__(self, store: MemoryOnlineStore) -> None:
        self.hashes = store.hashes
        self.keys: list[str] = []
        self.connection_pool = self
        self.retry = self

    async def call_with_retry(self, do: Any, fail: Any) -> Any:
        return await do()

    async def get_connection(self) -> _StoreClient:
        return self

    async def release(self, connection: _StoreClient) -> None:
        return None

    async def send_packed_command(self, commands: list[bytes], check_health: bool) -> None:
        self._answers = []
        for name, key, *fields in _resp_arrays(b"".join(commands)):
            assert name == b"HMGET"
            self.keys.append(key.decode())
            stored = self.hashes.get(key.decode(), {})
            self._answers.append([stored.get(f.decode()) for f in fields])

    async def read_response(self) -> list[bytes | None]:
        return self._answers.pop(0)


def _resp_arrays(data: bytes) -> list[list[bytes]]:
    """The commands in ``data``, as the Redis server reads them: arrays of bulk strings."""
    commands = []
    pos = 0

    def length(marker: bytes) -> int:
        nonlocal pos
        assert data[pos : pos + 1] == marker
        end = data.index(b"\r\n", pos)
        n = int(data[pos + 1 : end])
        pos = end + 2
        return n

    while pos < len(data):
        args = []
        for _ in range(length(b"*")):
            size = length(b"$")
            args.append(data[pos : pos + size])
            assert data[pos + size : pos + size + 2] == b"\r\n"
            pos += size + 2
        commands.append(args)
    return commands


def _written_and_read(
    outputs: list[ClientFeatures], prefix: str
) -> tuple[list[str], _StoreClient, list[dict[str, Any]]]:
    """What the consumer's sink writes for ``outputs``, and what the model's lookup reads for their clients."""
    store = MemoryOnlineStore()
    writer = OnlineStoreWriter(OnlineStore(client_features), prefix, store)
    updates = [writer.prepare(o, None) for o in outputs]
    store.apply([(u, 0) for u in updates])
    spec = model("risk", features=client_features)(_risk).features
    assert spec is not None
    client = _StoreClient(store)
    reader = OnlineFeatures(spec, OnlineStoreConfig(key_prefix=prefix), client=client)  # type: ignore[arg-type]
    records: list[dict[str, Any]] = [{"client_id": o.client_id} for o in outputs]
    asyncio.run(reader.fill(records))
    return [key for key, _ms, _fields in updates], client, records


def test_the_model_reads_back_the_key_and_values_the_consumer_writes() -> None:
    written = ClientFeatures(
        client_id="c00042",
        event_time=datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC),
        orders=3,
        total_spent=123.45,
        avg_rating=4.5,
        last_channel="web",
    )
    keys, client, records = _written_and_read([written], "features")
    assert keys == ["features:client-features:c00042"] == client.keys
    assert records == [{"client_id": "c00042", "orders": 3, "total_spent": 123.45, "avg_rating": 4.5}]
    stored = client.hashes[keys[0]]
    assert stored[EVENT_TIME_FIELD] == str(int(written.event_time.timestamp() * 1000)).encode()


_clients = st.builds(
    ClientFeatures,
    client_id=st.from_regex(r"c\d{5}", fullmatch=True),
    event_time=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    orders=st.integers(min_value=0, max_value=2**53),
    total_spent=st.floats(allow_nan=False, allow_infinity=False),
    avg_rating=st.none() | st.floats(min_value=1, max_value=5),
    last_channel=st.none() | st.text(max_size=20),
)


@settings(max_examples=60, deadline=None)
@given(outputs=st.lists(_clients, min_size=1, max_size=5, unique_by=lambda c: c.client_id))
def test_whatever_the_consumer_writes_the_model_reads_back(outputs: list[ClientFeatures]) -> None:
    keys, client, records = _written_and_read(outputs, "fx")
    assert keys == [client_features.online_key("fx", o.client_id) for o in outputs]
    assert set(client.keys) == set(keys)
    assert records == [
        {
            "client_id": o.client_id,
            "orders": o.orders,
            "total_spent": o.total_spent,
            "avg_rating": o.avg_rating,
        }
        for o in outputs
    ]
