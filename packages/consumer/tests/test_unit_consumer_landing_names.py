"""The names a landing writes. The names a record sink writes are the names an output dumps: a model's
``extra="allow"`` fields land too, a model that dumps by alias is checked by its aliases, two fields
that differ only in case (one column to Spark and Parquet readers) are refused, and a declared output
with a field of the online store's own is refused at declaration. The names a landing adds to every
row (the ``date`` partition column, the ``_kafka_*`` and ``_landed_at`` metadata) are no output
field's: a declared output type with one is refused at declaration, an output with one at run time is
dead-lettered (stage ``output``), whatever the case of the name."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from pydantic import BaseModel, ConfigDict, Field

from thimble.consumer import App, HandlerSignatureError, Landing, OnlineStore, Output, TestClient
from thimble.consumer._delivery import Pending
from thimble.consumer._landing import LandingWriter, ParquetFiles
from thimble.consumer._landing_columns import RESERVED, clash
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


def declaration_error(sink: Any, output: Any) -> str:
    """The error declaring a handler that returns ``output`` into ``sink`` raises: one line naming the
    handler and this file."""

    def keep(d: dict[str, Any]) -> Any:
        return d

    keep.__annotations__["return"] = output
    with pytest.raises(HandlerSignatureError) as info:
        App("declared").handler(source="in", sink=sink)(keep)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("handler declaration_error.<locals>.keep (")
    assert "test_unit_consumer_landing_names.py:" in message
    return message


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
    message = declaration_error(OnlineStore("fs", entity_key="id"), output)
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


def landing_app(dataset: str = "events") -> App:
    app = App("reserved")

    @app.handler(source="in", sink=Landing(dataset, event_time="ts"))
    def keep(d: dict[str, Any]) -> dict[str, Any]:
        return d

    return app


@pytest.mark.parametrize(
    ("field", "why"),
    [
        ("date", "is the landing's partition column (its folders are date=YYYY-MM-DD)"),
        ("Date", "is 'date' to Spark and Parquet readers, which ignore case"),
        ("_kafka_offset", "is a column the landing adds to every row (_kafka_topic, _kafka_partition"),
        ("_kafka_topic", "is a column the landing adds to every row"),
        ("_kafka_partition", "is a column the landing adds to every row"),
        ("_KAFKA_Offset", "is '_kafka_offset' to Spark and Parquet readers, which ignore case"),
        ("_landed_at", "is a column the landing adds to every row"),
    ],
)
def test_a_dict_output_with_a_field_the_landing_adds_is_dead_lettered_not_overwritten(
    field: str, why: str
) -> None:
    with TestClient(landing_app()) as t:
        t.send("in", {"id": 1, "ts": "2026-01-01T00:00:00Z", field: "2026-06-30"}, key="k")
        t.send("in", {"id": 2, "ts": "2026-01-02T00:00:00Z"})
        [letter] = t.dead_letters("in")
        assert (letter.error_stage, letter.original_offset, letter.key) == ("output", 0, b"k")
        assert letter.error_message.startswith(f"Landing 'events': output field {field!r} {why}")
        assert letter.error_message.endswith("; rename it")
        labels = {"handler": "keep"}
        dead = t.metrics.registry.get_sample_value("thimble_consumer_dead_lettered_messages_total", labels)
        failed = t.metrics.registry.get_sample_value(
            "thimble_consumer_failed_messages_total", {**labels, "stage": "output"}
        )
        [row] = t.landed("events")  # the consumer went on, and the next row is whole
    assert (dead, failed) == (1, 1)
    assert (row["id"], row["date"], row["_kafka_offset"], row["_kafka_topic"]) == (2, "2026-01-02", 1, "in")


def test_a_batch_output_with_a_reserved_field_dead_letters_only_its_own_input() -> None:
    app = App("reserved-batch")

    @app.handler(source="in", sink=Landing("events"), batch_size=3)
    def keep(ds: list[dict[str, Any]]) -> list[Output]:
        return [Output(d) for d in ds]

    with TestClient(app) as t:
        for i, event in enumerate([{"id": 1}, {"id": 2, "_Landed_At": "x"}, {"id": 3}]):
            t.send("in", event, key=str(i))
        [letter] = t.dead_letters("in")
        assert (letter.key, letter.error_stage) == (b"1", "output")
        assert "output field '_Landed_At' is '_landed_at'" in letter.error_message
        assert [row["id"] for row in t.landed("events")] == [1, 3]


def test_names_only_near_the_reserved_ones_land() -> None:
    near = {
        "dates": 1,
        "day": 2,
        "date_": 3,
        "_kafka": 4,
        "kafka_offset": 5,
        "_kafka_timestamp": 6,
        "_date": 7,
    }
    with TestClient(landing_app()) as t:
        t.send("in", {"ts": "2026-01-01T00:00:00Z", **near})
        assert not t.dead_letters()
        [row] = t.landed("events")
    assert {k: row[k] for k in near} == near
    assert [name for name in near if clash(name)] == []
    assert all(clash(name) and clash(name.upper()) for name in RESERVED)


def test_the_parquet_writer_refuses_the_row_and_writes_the_others_whole(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from thimble.consumer._delivery import Pending
    from thimble.consumer._landing import LandingWriter, ParquetFiles
    from thimble.consumer.testing import _Message

    writer = LandingWriter(Landing("readings"), ParquetFiles(tmp_path), 100, 30.0)
    outputs = [{"id": 0}, {"id": 1, "_kafka_offset": 999}, {"id": 2, "DATE": "1999-01-01"}, {"id": 3}]
    pending, refused = Pending(), {}
    for offset, output in enumerate(outputs):
        message = _Message("in", 0, offset, None, b"", None, 1767225600000)  # 2026-01-01
        try:
            writer.write(writer.prepare(output, message), pending)
        except ValueError as exc:
            refused[offset] = str(exc)
    writer.flush(0)
    pending.done()
    assert pending.error is None
    assert refused == {
        1: "Landing 'readings': output field '_kafka_offset' is a column the landing adds to every row "
        "(_kafka_topic, _kafka_partition, _kafka_offset, _landed_at); rename it",
        2: "Landing 'readings': output field 'DATE' is 'date' to Spark and Parquet readers, which ignore "
        "case, and 'date' is the landing's partition column (its folders are date=YYYY-MM-DD); rename it",
    }
    [path] = (tmp_path / "readings").rglob("*.parquet")
    assert path.parent.name == "date=2026-01-01"
    table = pq.read_table(path)
    assert [c.lower() for c in table.column_names].count("date") == 0
    assert [(r["id"], r["_kafka_offset"]) for r in table.to_pylist()] == [(0, 0), (3, 3)]


def test_an_undeclared_model_output_is_refused_at_run_time_too() -> None:
    class Loose(BaseModel):
        model_config = ConfigDict(extra="allow")
        id: int

    app = App("reserved-model")

    @app.handler(source="in", sink=Landing("events"))
    def keep(d: dict[str, Any]) -> Any:  # the output type is known only at run time
        return Loose(**d)

    with TestClient(app) as t:
        t.send("in", {"id": 1, "_kafka_partition": 7})
        t.send("in", {"id": 2})
        [letter] = t.dead_letters("in")
        assert "output field '_kafka_partition'" in letter.error_message
        assert [(r["id"], r["_kafka_partition"]) for r in t.landed("events")] == [(2, 0)]


class ModelOut(BaseModel):
    id: int
    date: str


@dataclass
class DataclassOut:
    id: int
    _kafka_offset: int


class TypedDictOut(TypedDict):
    id: int
    _landed_at: str


class CaseOut(BaseModel):
    id: int
    Date: str


class Cased(BaseModel):
    id: int
    Amount: float
    amount: float


class CasedByAlias(BaseModel):
    model_config = ConfigDict(serialize_by_alias=True)
    id: int
    total: float = Field(serialization_alias="ID")


class AliasOut(BaseModel):
    model_config = ConfigDict(serialize_by_alias=True)
    id: int
    when: str = Field(serialization_alias="_KAFKA_TOPIC")


@pytest.mark.parametrize(
    ("output", "error"),
    [
        (
            ModelOut,
            "Landing('events') cannot land field 'date' of ModelOut: it is the landing's partition column "
            "(its folders are date=YYYY-MM-DD); rename it",
        ),
        (
            list[DataclassOut],
            "Landing('events') cannot land field '_kafka_offset' of DataclassOut: it is a column the landing "
            "adds to every row (_kafka_topic, _kafka_partition, _kafka_offset, _landed_at); rename it",
        ),
        (TypedDictOut | None, "cannot land field '_landed_at' of TypedDictOut: it is a column the landing"),
        (
            Annotated[CaseOut, "doc"],
            "cannot land field 'Date' of CaseOut: it is 'date' to Spark and Parquet readers, which ignore "
            "case, and 'date' is the landing's partition column",
        ),
        (
            AliasOut,
            "cannot land field 'when' (landed as '_KAFKA_TOPIC') of AliasOut: '_KAFKA_TOPIC' is '_kafka_topic' "
            "to Spark",
        ),
        (
            Cased,
            "Landing('events') cannot land fields 'Amount' and 'amount' of Cased: they are one column to Spark "
            "and Parquet readers, which ignore case; rename one",
        ),
        (
            list[CasedByAlias],
            "Landing('events') cannot land fields 'id' and 'total' (landed as 'ID') of CasedByAlias: they are "
            "one column to Spark and Parquet readers, which ignore case; rename one",
        ),
    ],
    ids=["model", "dataclass", "typeddict", "case", "alias", "two-fields", "two-fields-alias"],
)
def test_a_declared_output_with_a_name_the_landing_cannot_take_is_refused_in_one_line(
    output: Any, error: str
) -> None:
    message = declaration_error(["out", Landing("events")], output)
    assert error in message


class Aliased(BaseModel):  # dumps (and lands) 'when'; 'date' is only the name it is read from
    when: str = Field(alias="date")


def test_an_alias_the_model_does_not_dump_by_is_not_what_lands() -> None:
    app = App("alias")

    @app.handler(source="in", sink=Landing("events"))
    def keep(d: Aliased) -> Aliased:
        return d

    with TestClient(app) as t:
        t.send("in", {"date": "x"})
        [row] = t.landed("events")
    assert row["when"] == "x"


def test_a_model_dumped_by_alias_lands_under_its_aliases(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from thimble.consumer._delivery import Pending
    from thimble.consumer._landing import LandingWriter, ParquetFiles
    from thimble.consumer.testing import _Message

    class ByAlias(BaseModel):
        model_config = ConfigDict(serialize_by_alias=True)
        n: int = Field(serialization_alias="N")
        tags: list[int] = Field(serialization_alias="Tags")  # landed as JSON text

    writer = LandingWriter(Landing("aliased"), ParquetFiles(tmp_path), 100, 30.0)
    pending = Pending()
    writer.write(writer.prepare(ByAlias(n=1, tags=[2]), _Message("in", 0, 0, None, b"", None, 0)), pending)
    writer.flush(0)
    pending.done()
    [path] = (tmp_path / "aliased").rglob("*.parquet")
    [row] = pq.read_table(path).select(["N", "Tags"]).to_pylist()
    assert row == {"N": 1, "Tags": "[2]"}  # the columns were named after the fields: all null
