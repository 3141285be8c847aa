"""The landing sink's Parquet store: what it loads, and when."""

from __future__ import annotations

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
