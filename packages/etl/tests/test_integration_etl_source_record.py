"""Each version records what its run read: the consumer offsets of the landed files, or the version of a
source table, so a table version tells what it was loaded up to."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from thimble.common.config import ThimbleSettings
from thimble.common.features import landing_folder
from thimble.etl import history, run_table
from thimble.etl.history import loaded_offsets

from .conftest import config

pytestmark = pytest.mark.integration


def _land(settings: ThimbleSettings, dataset: str, rows: list[tuple[str, int, int]]) -> None:
    """A landed file as the consumer writes them: the record's fields, then where it came from in Kafka."""
    folder = Path(landing_folder(settings.warehouse.landing, dataset, "2026-01-01"))
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "client_id": [f"c{offset}" for _, _, offset in rows],
            "_kafka_topic": [topic for topic, _, _ in rows],
            "_kafka_partition": pa.array([p for _, p, _ in rows], pa.int32()),
            "_kafka_offset": pa.array([offset for _, _, offset in rows], pa.int64()),
        }
    )
    pq.write_table(table, folder / f"part-{uuid.uuid4().hex}.parquet")


def test_a_version_knows_the_consumer_offsets_and_the_source_table_version_it_was_loaded_from(
    spark: Any, spark_settings: ThimbleSettings, table_name: str
) -> None:
    dataset = f"offsets_{uuid.uuid4().hex[:8]}"
    cfg = config(
        table=table_name,
        source={"type": "landing", "dataset": dataset},
        schema_={"columns": {"client_id": "string"}},  # the offsets are not columns of the table
        write={"mode": "append"},
    )
    _land(spark_settings, dataset, [("events", 0, 0), ("events", 0, 7), ("events", 1, 3)])
    _land(spark_settings, dataset, [("events", 1, 9), ("other", 0, 2)])
    result = run_table(cfg, spark=spark, settings=spark_settings)
    assert result.version is not None

    versions = history(table_name, spark=spark, settings=spark_settings)
    assert versions[0].source["kafka_offsets"] == {"events": {"0": 7, "1": 9}, "other": {"0": 2}}
    assert loaded_offsets(versions, result.version) == {"events": {0: 7, 1: 9}, "other": {0: 2}}

    derived = config(
        table=f"{table_name}_current",
        source={"type": "table", "table": table_name},
        write={"mode": "overwrite"},
    )
    built = run_table(derived, spark=spark, settings=spark_settings)
    assert built.committed
    (entry,) = history(f"{table_name}_current", spark=spark, settings=spark_settings)
    qualified = f"{spark_settings.warehouse.database}.{table_name}"
    assert entry.source == {"table": {"name": qualified, "version": result.version}}
