"""FeatureSet: the layouts it derives, and the definitions and names it refuses."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from thimble.common.errors import ConfigError
from thimble.common.features import (
    EVENT_TIME_FIELD,
    NAME_PATTERN,
    FeatureSet,
    check_name,
    landing_folder,
    online_key,
    qualified_table,
)

pytestmark = pytest.mark.unit


class ClientFeatures(BaseModel):
    client_id: str
    event_time: datetime
    orders: int = 0
    total_spent: float = 0.0
    avg_rating: float | None = None
    first_seen: date | None = None
    tags: list[str] = []


def _fs(**kwargs: Any) -> FeatureSet:
    return FeatureSet(
        kwargs.pop("name", "client-features"),
        kwargs.pop("schema", ClientFeatures),
        entity_key=kwargs.pop("entity_key", "client_id"),
        event_time=kwargs.pop("event_time", "event_time"),
        **kwargs,
    )


def test_the_layouts_come_from_the_name_and_the_schema() -> None:
    fs = _fs()
    assert fs.online_key("features", "c00042") == "features:client-features:c00042"
    assert (fs.dataset, fs.table) == ("client_features", "client_features")
    assert fs.journal_table("warehouse") == "warehouse.client_features"
    assert fs.journal() == {"keys": ["client_id"], "order_by": "event_time"}
    assert fs.features == ("orders", "total_spent", "avg_rating", "first_seen", "tags")
    assert fs.columns() == {
        "client_id": "string",
        "event_time": "timestamp",
        "orders": "bigint",
        "total_spent": "double",
        "avg_rating": "double",
        "first_seen": "date",
        "tags": "string",
    }


def test_dataset_and_table_may_be_named() -> None:
    fs = _fs(dataset="clients-landed", table="clients")
    assert (fs.dataset, fs.journal_table("wh"), fs.journal_table("x")) == (
        "clients-landed",
        "wh.clients",
        "x.clients",
    )


def test_the_landing_folders_of_a_dataset_and_of_its_days() -> None:
    assert landing_folder("/data/landing/", "client_features") == "/data/landing/client_features"
    assert landing_folder("s3a://b/landing", "x", "2026-01-02") == "s3a://b/landing/x/date=2026-01-02"
    assert _fs().landing_folder("/l", "*") == "/l/client_features/date=*"
    with pytest.raises(ConfigError, match=r"landing dataset '\.\./up' is not a valid name"):
        landing_folder("/l", "../up")


def test_module_level_helpers() -> None:
    assert online_key("p", "fs", 7) == "p:fs:7"
    assert qualified_table("t", "db") == "db.t"
    assert qualified_table("other.t", "db") == "other.t"
    assert EVENT_TIME_FIELD == "_event_time"


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"name": "../x"}, "feature set '../x' is not a valid name"),
        ({"schema": dict}, "schema must be a pydantic model class"),
        ({"entity_key": "id"}, "entity_key 'id' is not a field of ClientFeatures"),
        ({"event_time": "when"}, "event_time 'when' is not a field of ClientFeatures"),
        ({"event_time": "total_spent"}, "event_time 'total_spent' must be a datetime or epoch milliseconds"),
        ({"dataset": "a/b"}, "dataset 'a/b' is not a valid name"),
        ({"table": "client-features"}, "table 'client-features' is not a valid table name"),
    ],
)
def test_a_bad_definition_is_one_problem_naming_it(kwargs: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as error:
        _fs(**kwargs)
    (line,) = error.value.problems
    assert problem in line


@given(st.text(max_size=140))
def test_a_name_is_accepted_exactly_when_it_cannot_leave_a_folder_or_split_a_key(name: str) -> None:
    safe = (
        0 < len(name) <= 128
        and name[0].isascii()
        and name[0].isalnum()
        and all(c.isascii() and (c.isalnum() or c in "_-") for c in name)
    )
    if safe:
        assert check_name(name, "dataset") == name
        assert NAME_PATTERN.fullmatch(name)
    else:
        with pytest.raises(ConfigError):
            check_name(name, "dataset")


def test_a_field_stored_under_a_name_the_online_store_reserves_is_refused() -> None:
    class Sneaky(BaseModel):
        client_id: str
        event_time: int
        clock: int = Field(0, alias="_event_time")

    with pytest.raises(ConfigError, match="'_event_time' starts with '_'"):
        FeatureSet("sneaky", Sneaky, entity_key="client_id", event_time="event_time")
