"""The OnlineStore sink keeps its hashes its own: an output cannot write the store's own fields, and one
entity is one key (no ``None`` or ``True`` entity, ``42.0`` is ``42``)."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from thimble.consumer import App, OnlineStore, TestClient
from thimble.consumer._online_hash import EntityError, entity_text, reserved

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 1, tzinfo=UTC)
FROZEN = 99_999_999_999_999  # year 5138 in epoch ms: an entity stamped with it would never change again


def event(entity: Any, value: int, hours: int = 0, **extra: Any) -> dict[str, Any]:
    return {"id": entity, "v": value, "ts": (T0 + timedelta(hours=hours)).isoformat(), **extra}


def passthrough() -> App:
    app = App("online")

    @app.handler("events", sink=OnlineStore("fs", entity_key="id", event_time="ts"))
    def keep(e: dict[str, Any]) -> dict[str, Any]:
        return e

    return app


class Loose(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: int
    v: int
    ts: datetime


@pytest.mark.parametrize("field", ["_event_time", "_version", "_applied:events:0"])
@pytest.mark.parametrize("value", [FROZEN, "not a number"], ids=["far-future", "not-a-number"])
def test_an_output_with_a_field_of_the_store_is_dead_lettered_and_the_entity_goes_on(
    field: str, value: Any
) -> None:
    with TestClient(passthrough()) as t:
        t.send("events", event(7, 1, **{field: value}))
        t.send("events", event(7, 2, hours=1))
        [dead] = t.dead_letters()
        assert (dead.error_stage, dead.original_offset) == ("output", 0)
        assert f"OnlineStore 'fs': output field {field!r}" in dead.error_message
        stored = t.online("fs", 7)
        assert stored is not None
        assert stored["v"] == 2  # the later event was not skipped as older than a forged event time
        assert stored["_event_time"] == int((T0 + timedelta(hours=1)).timestamp() * 1000)
        assert set(stored) == {"id", "v", "ts", "_event_time"}


@pytest.mark.parametrize(
    "ts", [1e20, 10**19, -1e20, 253_402_300_800_000], ids=["1e20", "1e19", "-1e20", "year-10000"]
)
def test_an_event_time_no_datetime_holds_is_dead_lettered_and_the_entity_goes_on(ts: Any) -> None:
    with TestClient(passthrough()) as t:
        t.send("events", {"id": 7, "v": 1, "ts": ts})  # Landing refuses it too: no date to land it under
        t.send("events", event(7, 2))
        [dead] = t.dead_letters()
        assert (dead.error_stage, dead.original_offset) == ("output", 0)
        assert "outside the years 1 to 9999" in dead.error_message
        stored = t.online("fs", 7)
        assert stored is not None
        assert stored["v"] == 2  # not skipped as older than an event time past any date


def test_a_model_output_with_a_field_of_the_store_is_dead_lettered_too() -> None:
    app = App("online")

    @app.handler("events", sink=OnlineStore("fs", entity_key="id", event_time="ts"))
    def keep(e: Loose) -> Loose:
        return e

    with TestClient(app) as t:
        t.send("events", event(7, 1, _event_time=FROZEN))
        t.send("events", event(7, 2, hours=1, note="kept"))
        [dead] = t.dead_letters()
        assert dead.error_stage == "output"
        assert "'_event_time'" in dead.error_message
        assert t.online("fs", 7) == {
            "id": 7,
            "v": 2,
            "ts": "2026-03-01T01:00:00Z",
            "note": "kept",
            "_event_time": int((T0 + timedelta(hours=1)).timestamp() * 1000),
        }


def test_only_the_store_s_own_fields_are_reserved() -> None:
    assert [reserved(n) for n in ("_event_time", "_version", "_applied:t:0", "_applied:")] == [True] * 4
    assert not any(reserved(n) for n in ("event_time", "version", "_source", "__op", "applied", ""))


@pytest.mark.parametrize(
    "entity",
    [None, True, False, 42.5, math.nan, math.inf, ["a", "b"], {"a": 1}, ("a",), "", "a\nb", "x" * 513],
    ids=lambda entity: repr(entity)[:12],
)
def test_an_output_that_names_no_entity_is_dead_lettered_and_stores_nothing(entity: Any) -> None:
    with TestClient(passthrough()) as t:
        t.send("events", event(entity, 1))
        [dead] = t.dead_letters()
        assert (dead.error_stage, dead.error_class.rsplit(".", 1)[-1]) == ("output", "EntityError")
        assert "OnlineStore 'fs', entity_key 'id'" in dead.error_message
        assert t.online_store.hashes == {}


def test_none_and_true_are_not_the_strings_none_and_true() -> None:
    with TestClient(passthrough()) as t:
        t.send("events", event("None", 1))
        t.send("events", event("True", 1))
        t.send("events", event(None, 2, hours=1))
        t.send("events", event(True, 2, hours=1))
        assert len(t.dead_letters()) == 2
        assert (t.online("fs", "None") or {})["v"] == (t.online("fs", "True") or {})["v"] == 1


def test_an_integral_float_and_its_integer_are_one_entity() -> None:
    with TestClient(passthrough()) as t:
        t.send("events", event(42, 1))
        t.send("events", event(42.0, 2, hours=1))
        t.send("events", event(42, 0, hours=-1))  # older than the 42.0 event: skipped
        assert t.dead_letters() == []
        assert list(t.online_store.hashes) == ["features:fs:42"]
        assert (t.online("fs", 42) or {})["v"] == 2


class Colour(str, Enum):  # noqa: UP042 - not StrEnum: str() of this one is "Colour.RED"
    RED = "red"


@pytest.mark.parametrize(
    ("entity", "text"),
    [
        ("c1", "c1"),
        (42, "42"),
        (42.0, "42"),
        (-7.0, "-7"),
        (1e20, "100000000000000000000"),
        (Decimal("42.00"), "42"),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        (Colour.RED, "red"),
    ],
    ids=repr,
)
def test_an_entity_is_a_string_or_an_integer_in_the_key(entity: Any, text: str) -> None:
    assert entity_text(entity) == text


def test_the_entity_rule_is_the_stateful_one() -> None:
    from thimble.common.features import FeatureSet
    from thimble.consumer._state import StateError, StateSpec

    class Counted(BaseModel):
        id: int
        ts: datetime

    spec = StateSpec(FeatureSet("counted", Counted, entity_key="id", event_time="ts"))
    assert spec.entity_of({"id": 42.0}) == spec.entity_of({"id": 42}) == entity_text(42)
    for bad in (None, True, [1]):
        with pytest.raises(StateError, match="an entity must be a string or an integer"):
            spec.entity_of({"id": bad})
        with pytest.raises(EntityError, match="an entity must be a string or an integer"):
            entity_text(bad)
