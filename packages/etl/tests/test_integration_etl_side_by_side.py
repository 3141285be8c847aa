"""Runs of other tables at once, each in a Spark session of its own: the tables they share stay whole."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from pyspark.sql import SparkSession

from thimble.common.config import ThimbleSettings
from thimble.common.spark import side_session
from thimble.etl import EtlSettings, RunResult, _tables, run_table
from thimble.etl.errors import EtlError

from .conftest import config

pytestmark = pytest.mark.integration


def test_two_first_runs_at_once_both_create_the_metrics_table_and_both_keep_their_metrics(
    spark: SparkSession,
    spark_settings: ThimbleSettings,
    json_source: Callable[[list[dict[str, Any]]], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    metrics_table = f"m_{uuid.uuid4().hex[:10]}"
    settings = EtlSettings(**spark_settings.model_dump(), etl={"metrics_table": metrics_table})
    path = json_source([{"id": i, "amount": float(i)} for i in range(3)])
    tables = [f"t_{uuid.uuid4().hex[:10]}" for _ in range(2)]

    # Both runs have seen that the metrics table does not exist before either creates it.
    both_about_to_create = threading.Barrier(2, timeout=120)
    create_from = _tables.create_from

    def create_together(df: Any, table: str, partition_by: list[str]) -> None:
        if table.endswith(metrics_table):
            both_about_to_create.wait()
        create_from(df, table, partition_by)

    monkeypatch.setattr(_tables, "create_from", create_together)

    def load(table: str) -> RunResult:
        spec = config(
            table=table,
            source={"type": "files", "path": path, "format": "json"},
            schema_={"columns": {"id": "int", "amount": "double"}},
            quality={"metrics": [{"metric": "row_count"}]},
        )
        with side_session(spark) as own:
            return run_table(spec, spark=own, settings=settings)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(load, tables))

    assert [r.status for r in results] == ["committed", "committed"]
    qualified = f"{spark_settings.warehouse.database}.{metrics_table}"
    recorded = {
        (row["table"], row["name"])
        for row in spark.table(qualified).select("table", "name").collect()
        if row["name"] == "row_count"
    }
    assert recorded == {(f"{spark_settings.warehouse.database}.{table}", "row_count") for table in tables}


def test_a_run_whose_metrics_cannot_be_recorded_says_its_version_was_committed(
    spark: SparkSession, spark_settings: ThimbleSettings, json_source: Callable[[list[dict[str, Any]]], str]
) -> None:
    metrics_table = f"m_{uuid.uuid4().hex[:10]}"
    database = spark_settings.warehouse.database
    spark.sql(f"CREATE TABLE {database}.{metrics_table} (unrelated INT) USING parquet")
    settings = EtlSettings(**spark_settings.model_dump(), etl={"metrics_table": metrics_table})
    table = f"t_{uuid.uuid4().hex[:10]}"
    spec = config(
        table=table,
        source={"type": "files", "path": json_source([{"id": 1, "amount": 2.0}]), "format": "json"},
        schema_={"columns": {"id": "int", "amount": "double"}},
        quality={"metrics": [{"metric": "row_count"}]},
    )

    with pytest.raises(
        EtlError, match=rf"{table}: version 0 was committed, but its metrics could not be recorded"
    ):
        run_table(spec, spark=spark, settings=settings)
    assert spark.table(f"{database}.{table}").count() == 1
