"""The names a landing adds to every row (the ``date`` partition column, the ``_kafka_*`` and ``_landed_at``
metadata) are no output field's: a declared output type with one is refused at declaration, an output
with one at run time is dead-lettered (stage ``output``), whatever the case of the name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from pydantic import BaseModel, ConfigDict, Field

from thimble.consumer import App, HandlerSignatureError, Landing, Output, TestClient
from thimble.consumer._landing_columns import RESERVED, clash

pytestmark = pytest.mark.unit


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
    app = App("declared")

    def keep(d: dict[str, Any]) -> Any:
        return d

    keep.__annotations__["return"] = output
    with pytest.raises(HandlerSignatureError) as info:
        app.handler(source="in", sink=["out", Landing("events")])(keep)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        "handler test_a_declared_output_with_a_name_the_landing_cannot_take_is_refused_in_one_line"
    )
    assert "test_unit_consumer_landing_reserved.py:" in message
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
