"""The landing sink's Parquet store: what it loads, and when."""

from __future__ import annotations

import enum
import importlib.util
import subprocess
import sys
from pathlib import Path

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
    path = ParquetFiles(tmp_path).write("mixed", "2026-01-01", rows, None)
    assert pq.read_table(path).to_pylist() == [
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
        refused[2]
        == "Landing 'readings': field 'v': str where earlier rows hold number; a field keeps one type"
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
