"""The landing sink's Parquet store: what it loads, and when."""

from __future__ import annotations

import enum
import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.unit

PROBE = """
import sys
from thimble.consumer._landing import LandingWriter, ParquetFiles
from thimble.consumer.sinks import Landing
before = "pyarrow" in sys.modules
LandingWriter(Landing("events"), ParquetFiles(sys.argv[1]), 100, 30.0)
print(before, *(m in sys.modules for m in ("pyarrow.parquet", "pandas")))
"""


def test_parquet_is_loaded_when_the_writer_is_built_not_by_the_first_flush(tmp_path: Path) -> None:
    # The first flush runs under the pipeline lock; an import there (pyarrow loads pandas on first
    # use: seconds on a busy machine) would hold up a rebalance or a shutdown drain.
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    before, parquet, pandas = result.stdout.split()
    assert before == "False"
    assert parquet == "True"
    assert pandas == str(importlib.util.find_spec("pandas") is not None)


def test_an_event_before_year_1000_lands_under_a_four_digit_year() -> None:
    from thimble.consumer import App, Landing, TestClient

    app = App("old-events")

    @app.handler(source="in", sink=Landing("old", event_time="ts"))
    def keep(d: dict[str, object]) -> dict[str, object]:
        return d

    with TestClient(app) as t:
        t.send("in", {"id": 1, "ts": "0001-01-01T00:00:00+00:00"})
        [row] = t.landed("old")
    assert row["date"] == "0001-01-01"


def test_a_file_holds_every_field_of_every_row_not_only_the_first_rows(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from thimble.consumer._landing import ParquetFiles

    rows = [{"id": 1, "v": 1.5}, {"id": 2, "pad": "kept"}, {"id": 3, "v": None, "pad": None}]
    files = ParquetFiles(tmp_path)
    for row in rows:  # what the writer checks before it buffers a row
        files.field_types("mixed").check(row, set(), "mixed")
    path = files.write("mixed", "2026-01-01", rows, None)
    assert pq.read_table(path).select(["id", "v", "pad"]).to_pylist() == [
        {"id": 1, "v": 1.5, "pad": None},
        {"id": 2, "v": None, "pad": "kept"},
        {"id": 3, "v": None, "pad": None},
    ]


def test_a_row_no_parquet_column_can_hold_with_the_others_is_refused_alone(tmp_path: Path) -> None:
    import pyarrow.parquet as pq
    from pydantic import BaseModel

    from thimble.consumer._delivery import Pending
    from thimble.consumer._landing import LandingWriter, ParquetFiles
    from thimble.consumer.sinks import Landing
    from thimble.consumer.testing import _Message

    class Kind(enum.Enum):
        A = "a"

    class Reading(BaseModel):
        n: int
        extra: dict[str, object]  # landed as JSON text: its shape may change from row to row
        kind: Kind = Kind.A  # landed as JSON text too, so an Enum is fine here

    outputs = [
        {"id": 1, "v": 1, "tags": ["a"], "at": {"x": 1}},
        {"id": 2, "v": "one"},  # a str where earlier rows hold numbers
        {"id": 3, "v": 2**70},  # no 64-bit integer holds it
        {"id": 4, "tags": [1]},  # a list of numbers where earlier rows hold lists of str
        {"id": 5, "at": {"x": "1"}},  # nested too
        {
            "id": 6,
            "v": 2.5,
            "tags": None,
            "at": {"y": True},
        },  # a float beside ints, nulls and a new field fit
    ]
    writer = LandingWriter(Landing("readings"), ParquetFiles(tmp_path), 100, 30.0)
    pending, refused = Pending(), {}
    for offset, output in enumerate(outputs):
        try:
            writer.write(writer.prepare(output, _Message("in", 0, offset, None, b"", None, 0)), pending)
        except ValueError as exc:
            refused[output["id"]] = str(exc)
    writer.flush(0)
    pending.done()
    assert pending.error is None  # the file was written: the consumer goes on
    assert list(refused) == [2, 3, 4, 5]  # each input dead-lettered alone
    assert (
        refused[2] == "Landing 'readings': field 'v': str where earlier rows hold int; a field keeps one type"
    )
    assert "does not fit a 64-bit integer" in refused[3]
    [path] = (tmp_path / "readings").rglob("*.parquet")
    assert [row["id"] for row in pq.read_table(path).to_pylist()] == [1, 6]

    models = LandingWriter(Landing("models"), ParquetFiles(tmp_path), 100, 30.0)
    message = _Message("in", 0, 0, None, b"", None, 0)
    models.prepare(Reading(n=1, extra={"a": 1}), message)
    models.prepare(Reading(n=2, extra={"a": "x"}), message)
    with pytest.raises(ValueError, match="field 'n': 1180591620717411303424 does not fit a 64-bit integer"):
        models.prepare(Reading(n=2**70, extra={}), message)
    with pytest.raises(ValueError, match="field 'extra': Integer exceeds 64-bit range"):
        models.prepare(Reading(n=3, extra={"big": 2**70}), message)  # its JSON text would not encode
    with pytest.raises(ValueError, match="field 'kind': a Kind cannot be a Parquet column"):
        writer.prepare({"id": 7, "kind": Kind.A}, message)  # pyarrow cannot write an Enum
    writer.prepare({"id": 8, "kind": str(Kind.A.value)}, message)


def _land(writer: Any, outputs: list[Any], first_offset: int = 0) -> dict[int, str]:
    """Prepare and write each output as the pipeline does, then flush: the refused ones by offset."""
    from thimble.consumer._delivery import Pending
    from thimble.consumer.testing import _Message

    pending, refused = Pending(), {}
    for offset, output in enumerate(outputs, first_offset):
        try:
            writer.write(writer.prepare(output, _Message("in", 0, offset, None, b"", None, 0)), pending)
        except ValueError as exc:
            refused[offset] = str(exc)
    writer.flush(0)
    pending.done()
    assert pending.error is None
    return refused


def _process(root: Path, dataset: str) -> Any:
    """A landing writer of a new process (or of one restarted): nothing known but the files."""
    from thimble.consumer._landing import LandingWriter, ParquetFiles
    from thimble.consumer.sinks import Landing

    return LandingWriter(Landing(dataset), ParquetFiles(root), 100, 30.0)


def _read_dataset(folder: Path) -> list[dict[str, Any]]:
    """Every row of a landing dataset read as one, by the schema its files unify to (strictly: no
    column whose type differs from file to file, which Spark refuses too), by offset."""
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    schema = pa.unify_schemas([pq.read_schema(f) for f in sorted(folder.rglob("part-*.parquet"))])
    rows = ds.dataset(folder, schema=schema, format="parquet").to_table().to_pylist()
    return sorted(rows, key=lambda r: r["_kafka_offset"])


def test_a_new_process_adopts_the_field_types_of_the_datasets_files(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    first = _process(tmp_path, "events")
    assert _land(first, [{"id": 1, "v": 1, "f": 1.5, "tags": ["a"], "at": {"x": 1}}]) == {}

    restarted = _process(tmp_path, "events")  # a restart, or another process of the group
    refused = _land(
        restarted,
        [
            {"id": 2, "v": "one"},  # a str where the files hold integers
            {"id": 3, "v": 2.5},  # a float: the files' column is int64 (it was a number, in-process)
            {"id": 4, "tags": [1]},
            {"id": 5, "at": {"x": "1"}},
            {"id": 6, "v": 7, "f": 2, "at": {"y": True}, "new": "ok"},  # an int in a float column fits
        ],
        first_offset=2,
    )
    assert refused == {
        2: "Landing 'events': field 'v': str where earlier rows hold int; a field keeps one type",
        3: "Landing 'events': field 'v': float where the dataset's files hold int; a field keeps one type",
        4: "Landing 'events': field 'tags': int where earlier rows hold str; a field keeps one type",
        5: "Landing 'events': field 'at': str where earlier rows hold int; a field keeps one type",
    }
    files = sorted((tmp_path / "events").rglob("part-*.parquet"))
    assert len(files) == 2
    types = [{f.name: str(f.type) for f in pq.read_schema(path)} for path in files]
    assert types[0]["v"] == types[1]["v"] == "int64"
    assert types[0]["f"] == types[1]["f"] == "double"
    rows = _read_dataset(tmp_path / "events")
    assert [(r["id"], r["v"], r["f"], r["at"], r["new"]) for r in rows] == [
        (1, 1, 1.5, {"x": 1, "y": None}, None),
        (6, 7, 2.0, {"x": None, "y": True}, "ok"),
    ]


def test_one_process_keeps_a_number_field_one_type_from_file_to_file(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    writer = _process(tmp_path, "numbers")
    assert _land(writer, [{"v": 1}, {"v": 2.5}]) == {}  # in one file: a double column holds both
    assert _land(writer, [{"v": 3}], first_offset=2) == {}  # a later file: double too, not int64
    assert _land(writer, [{"v": 2**60}], first_offset=3) == {
        3: "Landing 'numbers': field 'v': int where earlier rows hold float, and no double holds an int "
        "beyond 2**53 exactly; a field keeps one type"
    }
    assert _land(_process(tmp_path, "ints"), [{"v": 1}]) == {}
    assert _land(_process(tmp_path, "ints"), [{"v": 2**60}], first_offset=1) == {}
    types = {str(pq.read_schema(f).field("v").type) for f in tmp_path.rglob("part-*.parquet")}
    assert types == {"double", "int64"}  # one per dataset
    assert [r["v"] for r in _read_dataset(tmp_path / "numbers")] == [1.0, 2.5, 3.0]
    assert [r["v"] for r in _read_dataset(tmp_path / "ints")] == [1, 2**60]


def test_objects_without_a_key_land_as_nulls_beside_objects_with_keys(tmp_path: Path) -> None:
    writer = _process(tmp_path, "empty")
    first = [{"id": 0, "e": {}}, {"id": 1, "e": {}, "l": [{}], "n": {"a": {}, "b": 1}}]
    assert _land(writer, first) == {}  # Parquet has no struct without a field: no file failed
    assert _land(writer, [{"id": 2, "e": {"x": 1}, "l": [{"k": "v"}, {}]}, {"id": 3, "e": {}}], 2) == {}
    refused = _land(_process(tmp_path, "empty"), [{"id": 4, "e": {"x": "one"}}, {"id": 5, "e": {}}], 4)
    assert refused == {
        4: "Landing 'empty': field 'e': str where earlier rows hold int; a field keeps one type"
    }
    rows = _read_dataset(tmp_path / "empty")
    assert [(r["id"], r["e"], r["l"], r["n"]) for r in rows] == [
        (0, None, None, None),
        (1, None, [None], {"b": 1}),  # an object without a key is null, as a missing key is
        (2, {"x": 1}, [{"k": "v"}, {"k": None}], None),
        (3, {"x": None}, None, None),
        (5, {"x": None}, None, None),
    ]


def test_the_harness_keeps_a_written_integer_field_one_type_as_files_do() -> None:
    from thimble.consumer import App, Landing, TestClient

    app = App("harness-types")

    @app.handler(source="in", sink=Landing("kept", batch_rows=1))
    def keep(d: dict[str, object]) -> dict[str, object]:
        return d

    with TestClient(app) as t:
        t.send("in", {"v": 1})
        t.send("in", {"v": 1.5})
        assert [r["v"] for r in t.landed("kept")] == [1]
        [dead] = t.dead_letters("in")
    assert dead.error_stage == "output"
    assert "field 'v': float where the dataset's files hold int" in dead.error_message


def test_a_restarted_process_reads_back_every_kind_of_field_it_wrote(tmp_path: Path) -> None:
    from datetime import UTC, date, datetime, time, timedelta
    from decimal import Decimal
    from uuid import uuid4

    row = {
        "b": True,
        "i": 1,
        "big": 2**60,
        "f": 0.5,
        "s": "é",
        "raw": b"\x00",
        "at": datetime(2026, 1, 1, tzinfo=UTC),
        "day": date(2026, 1, 1),
        "t": time(1, 2),
        "gap": timedelta(seconds=3),
        "price": Decimal("1.25"),
        "id": uuid4(),
        "tags": [["a"], []],
        "nested": {"n": {"m": 1.5}, "l": [None]},
    }
    first = _process(tmp_path, "kinds")
    assert _land(first, [row]) == {}
    assert _process(tmp_path, "kinds").store.field_types("kinds").shapes == first._types.shapes


def test_a_models_field_takes_the_type_the_datasets_files_hold(tmp_path: Path) -> None:
    import pyarrow.parquet as pq
    from pydantic import BaseModel

    class Reading(BaseModel):
        n: int
        note: str | None = None

    assert _land(_process(tmp_path, "readings"), [{"n": 1.5, "note": "a"}]) == {}
    models = _process(tmp_path, "readings")  # a new release outputs a model, n typed int
    assert _land(models, [Reading(n=2), Reading(n=2**60)], first_offset=1) == {
        2: "Landing 'readings': field 'n': int where earlier rows hold float, and no double holds an int "
        "beyond 2**53 exactly; a field keeps one type"
    }
    types = {str(pq.read_schema(f).field("n").type) for f in (tmp_path / "readings").rglob("part-*.parquet")}
    assert types == {"double"}
    assert [(r["n"], r["note"]) for r in _read_dataset(tmp_path / "readings")] == [(1.5, "a"), (2.0, None)]


def test_an_unreadable_newest_file_is_passed_over_for_the_field_types(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import pyarrow.parquet as pq

    assert _land(_process(tmp_path, "events"), [{"id": 1, "v": 1}]) == {}
    (written,) = (tmp_path / "events").rglob("part-*.parquet")
    damaged = written.with_name("part-99999999T999999999999Z-damaged.parquet")  # sorts newest
    damaged.write_bytes(b"PAR1 not a footer\nPAR1")

    refused = _land(_process(tmp_path, "events"), [{"id": 2, "v": 2.5}, {"id": 3, "v": 3}], first_offset=1)

    assert refused == {
        1: "Landing 'events': field 'v': float where the dataset's files hold int; a field keeps one type"
    }
    assert "passed over '" in caplog.text
    assert "damaged.parquet', which cannot be read as Parquet" in caplog.text
    newest = max(p for p in (tmp_path / "events").rglob("part-*.parquet") if p != damaged)
    assert str(pq.read_schema(newest).field("v").type) == "int64"
