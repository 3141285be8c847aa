"""A load is committed once: a run whose source progress another run has already committed writes nothing.

Two runs read the same progress when one was killed while a Spark Connect server finished its write,
or when two start at once; without this the second loads the same landed files again.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from thimble.common.config import ThimbleSettings
from thimble.common.features import landing_folder
from thimble.etl import TableConfig, history, run_table
from thimble.etl import runner as etl_runner
from thimble.etl._tables import _local_path, qualified
from thimble.etl.sources import read_source
from thimble.testing import OVER_CONNECT

from .conftest import config

pytestmark = pytest.mark.integration


def _land(settings: ThimbleSettings, dataset: str, ids: list[str]) -> None:
    folder = Path(landing_folder(settings.warehouse.landing, dataset, "2026-01-01"))
    folder.mkdir(parents=True, exist_ok=True)
    rows = pa.table({"client_id": ids, "segment": ["a"] * len(ids), "n": list(range(len(ids)))})
    pq.write_table(rows, folder / f"part-{uuid.uuid4().hex}.parquet")


def _config(table_name: str, dataset: str, mode: str) -> TableConfig:
    return config(
        table=table_name,
        source={"type": "landing", "dataset": dataset, "incremental": True},
        schema_={"columns": {"client_id": "string", "segment": "string", "n": "long"}},
        write={"mode": mode},
        **({"journal": {"keys": ["client_id"], "track": ["segment", "n"]}} if mode == "journal" else {}),
    )


@pytest.mark.parametrize("mode", ["append", "journal"])
def test_a_run_that_read_progress_another_run_committed_writes_nothing(
    spark: Any, spark_settings: ThimbleSettings, table_name: str, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = f"once_{uuid.uuid4().hex[:8]}"
    cfg = _config(table_name, dataset, mode)
    _land(spark_settings, dataset, ["c1", "c2", "c3"])
    assert run_table(cfg, spark=spark, settings=spark_settings).status == "committed"
    _land(spark_settings, dataset, ["c4", "c5"])
    # What a second run read before the first one below committed: the same new file, from version 0.
    stale = read_source(spark, cfg, spark_settings, qualified(table_name, spark_settings))
    assert stale.progress_from == 0
    first = run_table(cfg, spark=spark, settings=spark_settings)
    assert (first.status, first.version) == ("committed", 1)

    monkeypatch.setattr(etl_runner, "read_source", lambda *_args: stale)
    second = run_table(cfg, spark=spark, settings=spark_settings)

    assert (second.status, second.version) == ("no_new_data", 1)
    assert [v.version for v in history(table_name, spark=spark, settings=spark_settings)] == [1, 0]
    ids = [row["client_id"] for row in spark.table(qualified(table_name, spark_settings)).collect()]
    assert sorted(ids) == ["c1", "c2", "c3", "c4", "c5"]


@pytest.mark.skipif(OVER_CONNECT, reason="a Spark Connect server finishes the write of a client it lost")
def test_a_table_whose_first_run_stopped_before_the_metastore_knew_it_is_taken_up(
    spark: Any, spark_settings: ThimbleSettings, table_name: str, tmp_path: Path
) -> None:
    dataset = f"orphan_{uuid.uuid4().hex[:8]}"
    cfg = _config(table_name, dataset, "append")
    table = qualified(table_name, spark_settings)
    _land(spark_settings, dataset, ["c1", "c2", "c3"])
    run_table(cfg, spark=spark, settings=spark_settings)
    # What a run killed between its first commit and the metastore entry leaves: the table's folder alone.
    folder = _local_path(spark, table)
    assert folder is not None
    shutil.copytree(folder, tmp_path / "kept")
    spark.sql(f"DROP TABLE {table}")
    shutil.copytree(tmp_path / "kept", folder)
    _land(spark_settings, dataset, ["c4", "c5"])

    result = run_table(cfg, spark=spark, settings=spark_settings)

    assert (result.status, result.version) == ("committed", 1)
    ids = [row["client_id"] for row in spark.table(table).collect()]
    assert sorted(ids) == ["c1", "c2", "c3", "c4", "c5"]  # the first file is not loaded again
