"""Sinks made from a FeatureSet take its names; every sink name is a safe name, refused in one line otherwise."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from thimble.common.errors import ConfigError
from thimble.common.features import FeatureSet
from thimble.consumer import App, Landing, OnlineStore, TestClient
from thimble.consumer._describe import describe_app
from thimble.consumer._landing import ParquetFiles
from thimble.consumer._loader import load_app
from thimble.consumer.config import ConsumerSettings
from thimble.consumer.errors import AppLoadError, HandlerSignatureError

pytestmark = pytest.mark.unit


class ClientFeatures(BaseModel):
    client_id: str
    ts: datetime
    orders: int = 0


client_features = FeatureSet("client-features", ClientFeatures, entity_key="client_id", event_time="ts")
BAD_NAMES = ["../../etc", "a/b", "..", ".hidden", "x:y", "", "with space", "a\\b"]


def test_an_online_store_from_a_feature_set_takes_its_name_entity_key_and_event_time() -> None:
    sink = OnlineStore(client_features, ttl_s=60)
    assert (sink.feature_set, sink.entity_key, sink.event_time, sink.ttl_s) == (
        "client-features",
        "client_id",
        "ts",
        60,
    )
    assert sink.definition is client_features
    assert sink == OnlineStore("client-features", entity_key="client_id", event_time="ts", ttl_s=60)


def test_a_landing_from_a_feature_set_takes_its_dataset_and_event_time() -> None:
    sink = Landing(client_features, batch_rows=10)
    assert (sink.dataset, sink.event_time, sink.batch_rows) == ("client_features", "ts", 10)
    assert sink.definition is client_features


def test_a_role_given_beside_a_feature_set_must_agree_with_it() -> None:
    assert OnlineStore(client_features, entity_key="client_id").entity_key == "client_id"
    with pytest.raises(HandlerSignatureError, match="entity_key='orders' differs"):
        OnlineStore(client_features, entity_key="orders")
    with pytest.raises(HandlerSignatureError, match="event_time='orders' differs"):
        Landing(client_features, event_time="orders")


def test_an_online_store_by_name_needs_an_entity_key() -> None:
    with pytest.raises(HandlerSignatureError, match="needs entity_key="):
        OnlineStore("client-features")


@pytest.mark.parametrize("name", BAD_NAMES)
def test_an_unsafe_sink_name_is_refused_in_one_line(name: str) -> None:
    with pytest.raises(HandlerSignatureError) as landing:
        Landing(name)
    with pytest.raises(HandlerSignatureError) as online:
        OnlineStore(name, entity_key="id")
    for error, what in ((landing, "Landing dataset"), (online, "OnlineStore feature set")):
        assert str(error.value).startswith(f"{what} {name!r} is not a valid name")
        assert "\n" not in str(error.value)


def test_an_app_landing_outside_the_landing_folder_fails_to_load_in_one_line(tmp_path: Path) -> None:
    module = tmp_path / "escaping_app.py"
    module.write_text(
        "from thimble.consumer import App, Landing\n"
        "app = App('escape')\n"
        "@app.handler('events', sink=Landing('../../etc'))\n"
        "def handle(value: dict) -> dict:\n"
        "    return value\n"
    )
    with pytest.raises(AppLoadError) as error:
        load_app(f"{module}:app")
    assert "Landing dataset '../../etc' is not a valid name" in str(error.value)
    assert "\n" not in str(error.value)


def test_the_landing_files_refuse_a_dataset_that_leaves_their_folder(tmp_path: Path) -> None:
    root = tmp_path / "landing" / "area"
    files = ParquetFiles(root)
    with pytest.raises(ConfigError, match="not a valid name"):
        files.write("../../escaped", "2026-01-01", [{"a": 1}], None)
    assert not (tmp_path / "escaped").exists()
    assert not list(tmp_path.rglob("*.parquet"))


def test_the_harness_reads_a_feature_set_back_by_its_definition() -> None:
    app = App("features")

    @app.handler("events", sink=[OnlineStore(client_features), Landing(client_features)])
    def featurize(event: ClientFeatures) -> ClientFeatures:
        return event

    with TestClient(app) as t:
        t.send("events", {"client_id": "c00042", "ts": "2026-01-02T03:04:05Z", "orders": 3})
        online = t.online(client_features, "c00042")
        landed = t.landed(client_features)
    assert online == {
        "client_id": "c00042",
        "ts": "2026-01-02T03:04:05Z",
        "orders": 3,
        "_event_time": int(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp() * 1000),
    }
    assert [(r["client_id"], r["orders"], r["date"]) for r in landed] == [("c00042", 3, "2026-01-02")]


def test_describe_shows_the_online_key_and_landing_folder_of_a_feature_set() -> None:
    app = App("features")

    @app.handler("events", sink=[OnlineStore(client_features), Landing(client_features)])
    def featurize(event: ClientFeatures) -> ClientFeatures:
        return event

    settings = ConsumerSettings.model_validate({"warehouse": {"landing": "/data/landing/"}})
    online, landing = describe_app(app, settings)["handlers"][0]["sinks"]
    assert online["key_pattern"] == "features:client-features:<client_id>"
    assert landing["path"] == "/data/landing/client_features/date=YYYY-MM-DD/"


class Visit(BaseModel):
    visitor: str
    ts: datetime


def _visits_to(*sinks: OnlineStore | Landing) -> None:
    App("visits").handler("visits", sink=list(sinks))(_visits)


def _visits(visit: Visit) -> list[Visit] | Visit | None:
    return visit


@pytest.mark.parametrize(
    ("sink", "message"),
    [
        (
            lambda: OnlineStore(client_features),
            "OnlineStore('client-features') reads the entity_key 'client_id' of each output, but Visit has "
            "no such field (fields: visitor, ts)",
        ),
        (
            lambda: Landing("visits", event_time="when"),
            "Landing('visits') reads the event_time 'when' of each output, but Visit has no such field",
        ),
    ],
)
def test_a_sink_needing_a_field_the_output_model_lacks_is_refused_at_registration(
    sink: Any, message: str
) -> None:
    with pytest.raises(HandlerSignatureError) as error:
        _visits_to(sink())
    assert message in str(error.value)
    assert "_visits" in str(error.value)


def test_outputs_that_have_the_fields_register() -> None:
    _visits_to(
        OnlineStore("visits", entity_key="visitor", event_time="ts"), Landing("visits", event_time="ts")
    )
