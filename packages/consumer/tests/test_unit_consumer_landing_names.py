"""The names a record sink writes are the names an output dumps: a model's ``extra="allow"`` fields land
too, a model that dumps by alias is checked by its aliases, two fields that differ only in case (one
column to Spark and Parquet readers) are refused, and a declared output with a field of the online
store's own is refused at declaration."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field

from thimble.consumer import App, HandlerSignatureError, Landing, OnlineStore, TestClient
from thimble.consumer._delivery import Pending
from thimble.consumer._landing import LandingWriter, ParquetFiles
from thimble.consumer.testing import _Message

pytestmark = pytest.mark.unit

JAN_1 = 1767225600000  # 2026-01-01T00:00:00Z in epoch ms


def land(tmp_path: Path, dataset: str, outputs: list[Any]) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """``outputs`` through a Parquet landing writer: the rows of its file(s), and the refused outputs."""
    import pyarrow.parquet as pq

    writer = LandingWriter(Landing(dataset), ParquetFiles(tmp_path), 100, 30.0)
    pending, refused = Pending(), {}
    for offset, output in enumerate(outputs):
        try:
            writer.write(writer.prepare(output, _Message("in", 0, offset, None, b"", None, JAN_1)), pending)
        except ValueError as exc:
            refused[offset] = str(exc)
    writer.flush(0)
    pending.done()
    assert pending.error is None
    rows = [
        row
        for path in sorted((tmp_path / dataset).rglob("*.parquet"))
        for row in pq.read_table(path).to_pylist()
    ]
    return rows, refused


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: int


def test_the_extra_fields_of_a_model_land_typed_as_a_dict_s_fields(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    outputs = [
        Open(id=1, score=1, tags=["a"]),
        Open(id=2, score=2.5, note="n"),
        Open(id=3, score="high"),  # a field keeps one type: refused alone, counted as a dead letter
        Open(id=4),
    ]
    rows, refused = land(tmp_path, "open", outputs)
    assert refused == {
        2: "Landing 'open': field 'score': str where earlier rows hold float; a field keeps one type"
    }
    got = [{k: r[k] for k in ("id", "score", "tags", "note", "_kafka_offset")} for r in rows]
    assert got == [
        {"id": 1, "score": 1.0, "tags": ["a"], "note": None, "_kafka_offset": 0},
        {"id": 2, "score": 2.5, "tags": None, "note": "n", "_kafka_offset": 1},
        {"id": 4, "score": None, "tags": None, "note": None, "_kafka_offset": 3},
    ]
    [path] = (tmp_path / "open").rglob("*.parquet")
    schema = pq.read_schema(path)
    assert str(schema.field("score").type) == "double"
    assert schema.names[-4:] == ["_kafka_topic", "_kafka_partition", "_kafka_offset", "_landed_at"]


class ByAlias(BaseModel):
    model_config = ConfigDict(serialize_by_alias=True)
    user_id: int = Field(serialization_alias="userId")
    event_ts: datetime = Field(serialization_alias="eventTs")
    v: int


def by_alias_app(sink: Any) -> App:
    app = App("by-alias")

    @app.handler(source="in", sink=sink)
    def keep(e: dict[str, Any]) -> ByAlias:
        return ByAlias(user_id=e["id"], event_ts=e["ts"], v=e["v"])

    return app


@pytest.mark.parametrize(
    ("sink", "error"),
    [
        (
            Landing("events", event_time="event_ts"),
            "Landing('events') reads the event_time 'event_ts' of each output, but ByAlias dumps field "
            "'event_ts' as 'eventTs' (serialize_by_alias); write event_time='eventTs'",
        ),
        (
            OnlineStore("fs", entity_key="user_id", event_time="eventTs"),
            "OnlineStore('fs') reads the entity_key 'user_id' of each output, but ByAlias dumps field "
            "'user_id' as 'userId' (serialize_by_alias); write entity_key='userId'",
        ),
        (
            OnlineStore("fs", entity_key="userId", event_time="event_ts"),
            "OnlineStore('fs') reads the event_time 'event_ts' of each output, but ByAlias dumps field "
            "'event_ts' as 'eventTs'",
        ),
        (
            Landing("events", event_time="when"),
            "Landing('events') reads the event_time 'when' of each output, but ByAlias has no such field "
            "(fields: userId, eventTs, v)",
        ),
    ],
    ids=["landing-field-name", "store-key-field-name", "store-time-field-name", "no-such-field"],
)
def test_a_model_dumped_by_alias_is_checked_by_the_names_it_dumps(sink: Any, error: str) -> None:
    with pytest.raises(HandlerSignatureError) as info:
        by_alias_app(sink)  # the writers read these names: it passed, then dead-lettered every input
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("handler by_alias_app.<locals>.keep (")
    assert "test_unit_consumer_landing_names.py:" in message
    assert error in message


def test_a_model_dumped_by_alias_is_written_by_both_sinks_under_its_aliases() -> None:
    sinks = [
        OnlineStore("fs", entity_key="userId", event_time="eventTs"),
        Landing("events", event_time="eventTs"),
    ]
    with TestClient(by_alias_app(sinks)) as t:  # refused at declaration: 'userId' is no field name
        t.send("in", {"id": 7, "ts": "2026-03-01T10:00:00Z", "v": 1})
        assert t.dead_letters() == []
        stored = t.online("fs", 7)
        [row] = t.landed("events")
    assert stored is not None
    assert (stored["userId"], stored["v"], stored["_event_time"]) == (7, 1, 1772359200000)
    assert (row["userId"], row["eventTs"], row["date"]) == (
        7,
        datetime(2026, 3, 1, 10, tzinfo=UTC),
        "2026-03-01",
    )


def test_two_fields_differing_only_in_case_are_dead_lettered_at_run_time_and_counted() -> None:
    app = App("cased-run")

    @app.handler(source="in", sink=Landing("events"))
    def keep(d: dict[str, Any]) -> dict[str, Any]:
        return d

    with TestClient(app) as t:
        t.send("in", {"id": 1, "Amount": 1.5, "amount": 2.5}, key="k")
        t.send("in", {"id": 2, "amount": 3.5})
        [letter] = t.dead_letters("in")
        assert (letter.error_stage, letter.original_offset, letter.key) == ("output", 0, b"k")
        assert letter.error_message.startswith(
            "Landing 'events': output fields 'Amount' and 'amount' are one column to Spark and Parquet "
            "readers, which ignore case; rename one"
        )
        dead = t.metrics.registry.get_sample_value(
            "thimble_consumer_dead_lettered_messages_total", {"handler": "keep"}
        )
        assert dead == 1
        assert [(r["id"], r["amount"]) for r in t.landed("events")] == [(2, 3.5)]


def test_the_parquet_writer_refuses_a_case_collision_and_lands_the_others(tmp_path: Path) -> None:
    rows, refused = land(tmp_path, "cased", [{"id": 1, "v": 1}, Open(id=2, V=2, v=3), {"id": 3, "v": 4}])
    assert refused == {
        1: "Landing 'cased': output fields 'V' and 'v' are one column to Spark and Parquet readers, which "
        "ignore case; rename one"
    }
    assert [(r["id"], r["v"]) for r in rows] == [(1, 1), (3, 4)]
    assert [c for c in rows[0] if c.lower() == "v"] == ["v"]


class WithVersion(BaseModel):
    id: int
    _private: int = 0  # a private attribute: not dumped, not a field
    version: int = Field(serialization_alias="_version")
    model_config = ConfigDict(serialize_by_alias=True)


class WithEventTime(BaseModel):
    id: int
    _event_time: int = 0  # private too
    applied: str = Field(alias="_applied:in:0")  # read from it, dumped as 'applied': stored fine


@pytest.mark.parametrize(
    ("output", "error"),
    [
        (
            WithVersion,
            "OnlineStore('fs') cannot store field 'version' (stored as '_version') of WithVersion: '_version' "
            "is one of the store's own fields (_event_time, _version, _applied:*); rename it",
        ),
    ],
)
def test_a_declared_output_with_a_field_of_the_store_is_refused_at_declaration(
    output: Any, error: str
) -> None:
    app = App("stored")

    def keep(d: dict[str, Any]) -> Any:
        return d

    keep.__annotations__["return"] = output
    with pytest.raises(HandlerSignatureError) as info:
        app.handler(source="in", sink=OnlineStore("fs", entity_key="id"))(keep)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        "handler test_a_declared_output_with_a_field_of_the_store_is_refused_at_declaration"
    )
    assert message.endswith(error)


def test_a_declared_dataclass_with_a_field_of_the_store_is_refused_and_a_name_only_read_is_not() -> None:
    from dataclasses import dataclass

    @dataclass
    class Stamped:
        id: int
        _event_time: int

    app = App("stored-dataclass")

    def keep(d: dict[str, Any]) -> Any:
        return d

    keep.__annotations__["return"] = Stamped | None
    with pytest.raises(
        HandlerSignatureError, match=r"cannot store field '_event_time' of Stamped: it is one"
    ):
        app.handler(source="in", sink=OnlineStore("fs", entity_key="id"))(keep)

    @app.handler(source="other", sink=OnlineStore("fs", entity_key="id"))
    def read_by_alias(d: dict[str, Any]) -> WithEventTime:
        return WithEventTime.model_validate(d)

    with TestClient(app) as t:
        t.send("other", {"id": 7, "_applied:in:0": "x"})
        stored = t.online("fs", 7)
    assert stored is not None
    assert stored["applied"] == "x"
