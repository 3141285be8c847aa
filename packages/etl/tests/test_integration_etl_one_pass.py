"""The one-pass write: when nothing must be known before writing, rows are written as they are computed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession

from thimble.common.config import ThimbleSettings
from thimble.etl import RunResult, _tables, history, table_version, write_dataframe
from thimble.etl._connect import jobs_in_group
from thimble.testing import OVER_CONNECT, in_process_only

pytestmark = pytest.mark.integration

METRICS: list[dict[str, Any]] = [
    {"metric": "row_count"},
    {"metric": "completeness", "column": "band"},
    {"metric": "distinct_count", "column": "band"},
    {"metric": "uniqueness", "column": "id"},
    {"metric": "min", "column": "score"},
    {"metric": "max", "column": "at"},
    {"metric": "mean", "column": "score"},
    {"metric": "stddev", "column": "score"},
    {"metric": "quantile", "column": "score", "quantile": 0.5},
    {"metric": "sql", "name": "total", "expression": "sum(score)"},
]


def _scored(spark: SparkSession, rows: int, evaluated: Any = None) -> DataFrame:
    """A costly scorer stand-in (mapInPandas) that counts the rows it evaluates."""

    def score(batches: Iterator[Any]) -> Iterator[Any]:
        for batch in batches:
            if evaluated is not None:
                evaluated.add(len(batch))
            yield batch.assign(
                score=batch["id"] / 10,
                band=["low" if i % 3 else None for i in batch["id"]],
            )

    return (
        spark.range(rows, numPartitions=2)
        .mapInPandas(score, "id long, score double, band string")
        .selectExpr("*", "timestamp_seconds(1700000000 + id) AS at")
    )


def _quality_rows(spark: SparkSession, settings: ThimbleSettings, run_id: str) -> list[Any]:
    return (
        spark.table(f"{settings.warehouse.database}.thimble_quality").filter(f"run_id = '{run_id}'").collect()
    )


@in_process_only
def test_append_is_one_spark_job_with_the_metrics_of_the_gated_path(
    spark: SparkSession, spark_settings: ThimbleSettings, table_name: str
) -> None:
    gated_table = f"{table_name}_gated"
    for name in (table_name, gated_table):  # the one-pass path appends to an existing table
        write_dataframe(_scored(spark, 3), name, mode="append", settings=spark_settings)
    evaluated = spark.sparkContext.accumulator(0)
    before = table_version(table_name, spark=spark, settings=spark_settings)

    result = write_dataframe(
        _scored(spark, 40, evaluated),
        table_name,
        mode="append",
        quality={"metrics": METRICS, "checks": [{"metric": "row_count", "max": 10, "severity": "warn"}]},
        metadata={"model_version": 3},
        settings=spark_settings,
    )
    # A check that can block needs the metrics before the write: the gated path, on the same rows.
    gated = write_dataframe(
        _scored(spark, 40),
        gated_table,
        mode="append",
        quality={"metrics": METRICS, "checks": [{"metric": "row_count", "min": 1}]},
        settings=spark_settings,
    )

    assert (result.status, result.version, result.previous_version) == ("committed", before + 1, before)
    assert (result.rows_read, result.inserted, result.rows_quarantined) == (40, 40, 0)
    assert evaluated.value == 40
    assert result.spark_jobs["write"] == 1
    assert "validate" not in result.spark_jobs
    assert "validate" in gated.spark_jobs
    assert result.metrics.keys() == gated.metrics.keys()
    for name, value in gated.metrics.items():
        assert result.metrics[name] == pytest.approx(value), name
    assert [(c.status, c.value) for c in result.checks] == [("warn", 40.0)]

    latest = history(table_name, spark=spark, settings=spark_settings)[0]
    assert (latest.version, latest.run_id, latest.inserted, latest.rows_written) == (
        result.version,
        result.run_id,
        40,
        40,
    )
    assert latest.metadata == {"model_version": 3}
    stored = _quality_rows(spark, spark_settings, result.run_id)
    assert {
        (r.kind, r.name, r.value, r.version, r.committed) for r in stored if r.name.startswith("row_count")
    } == {
        ("metric", "row_count", 40.0, result.version, True),
        ("check", "row_count <= 10", 40.0, result.version, True),
    }
    assert {r.name for r in stored if r.kind == "metric"} == set(gated.metrics)


@in_process_only
def test_replacing_the_schema_is_one_pass_too(
    spark: SparkSession, spark_settings: ThimbleSettings, table_name: str
) -> None:
    full = f"{spark_settings.warehouse.database}.{table_name}"
    write_dataframe(
        spark.createDataFrame([(1, 0.5)], "id int, p double"), table_name, settings=spark_settings
    )
    evaluated = spark.sparkContext.accumulator(0)
    result = write_dataframe(
        _scored(spark, 10, evaluated),
        table_name,
        mode="overwrite",
        overwrite_schema=True,
        quality={"metrics": [{"metric": "row_count"}, {"metric": "mean", "column": "score"}]},
        settings=spark_settings,
    )
    # One pass over the rows; Delta's own jobs list the files the new version removes.
    assert (result.status, result.inserted, evaluated.value) == ("committed", 10, 10)
    assert "validate" not in result.spark_jobs
    assert result.metrics["mean:score"] == pytest.approx(0.45)
    assert spark.table(full).columns == ["id", "score", "band", "at"]
    assert spark.table(full).count() == 10
    assert history(table_name, spark=spark, settings=spark_settings)[0].inserted == 10
    props = {r.key: r.value for r in spark.sql(f"SHOW TBLPROPERTIES {full}").collect()}
    assert props["delta.enableChangeDataFeed"] == "true"


def test_zero_rows_commit_nothing_but_are_measured(
    spark: SparkSession, spark_settings: ThimbleSettings, table_name: str
) -> None:
    write_dataframe(_scored(spark, 5), table_name, settings=spark_settings)
    before = table_version(table_name, spark=spark, settings=spark_settings)
    result = write_dataframe(
        _scored(spark, 5).limit(0),
        table_name,
        quality={"metrics": [{"metric": "row_count"}, {"metric": "mean", "column": "score"}]},
        settings=spark_settings,
    )
    assert (result.status, result.version, result.previous_version) == ("unchanged", before, before)
    assert (result.inserted, result.metrics["row_count"], result.metrics["mean:score"]) == (0, 0.0, None)
    if not OVER_CONNECT:  # the one-pass write needs metrics observed on a write, which Connect cannot
        assert "validate" not in result.phase_seconds
    assert table_version(table_name, spark=spark, settings=spark_settings) == before
    stored = _quality_rows(spark, spark_settings, result.run_id)
    assert {(r.name, r.value, r.committed) for r in stored if r.name == "row_count"} == {
        ("row_count", 0.0, False)
    }


def test_a_blocking_check_keeps_the_gated_path_and_the_version(
    spark: SparkSession, spark_settings: ThimbleSettings, table_name: str
) -> None:
    write_dataframe(_scored(spark, 5), table_name, settings=spark_settings)
    before = table_version(table_name, spark=spark, settings=spark_settings)
    blocked = write_dataframe(
        _scored(spark, 5),
        table_name,
        quality={"metrics": [{"metric": "row_count"}], "checks": [{"metric": "row_count", "min": 6}]},
        settings=spark_settings,
    )
    assert (blocked.status, blocked.version) == ("blocked", before)
    assert "validate" in blocked.phase_seconds
    assert table_version(table_name, spark=spark, settings=spark_settings) == before
    assert spark.table(f"{spark_settings.warehouse.database}.{table_name}").count() == 5


def test_a_metric_spark_cannot_observe_is_measured_in_its_own_job(
    spark: SparkSession, spark_settings: ThimbleSettings, table_name: str
) -> None:
    write_dataframe(_scored(spark, 5), table_name, settings=spark_settings)
    result = write_dataframe(
        _scored(spark, 30),
        table_name,
        quality={"metrics": [{"metric": "sql", "name": "bands", "expression": "count(DISTINCT band)"}]},
        settings=spark_settings,
    )
    assert (result.status, result.inserted, result.metrics["bands"]) == ("committed", 30, 1.0)
    assert "validate" in result.phase_seconds
    if not OVER_CONNECT:
        assert result.spark_jobs["quality"] == 1


def _two_runs_with_one_metric(
    spark: SparkSession, settings: ThimbleSettings, table_name: str
) -> list[RunResult]:
    """Two appending runs: the first creates the metrics table, the second appends to it natively."""
    return [
        write_dataframe(
            _scored(spark, 5 + i),
            table_name,
            mode="append",
            quality={"metrics": METRICS[:1]},
            settings=settings,
        )
        for i in range(2)
    ]


def test_metrics_rows_are_appended_natively_once_the_metrics_table_exists(
    spark: SparkSession, spark_settings: ThimbleSettings, table_name: str
) -> None:
    runs = _two_runs_with_one_metric(spark, spark_settings, table_name)
    metrics_table = f"{spark_settings.warehouse.database}.thimble_quality"
    for run in runs:
        stored = {r["name"]: r["value"] for r in _quality_rows(spark, spark_settings, run.run_id)}
        assert stored["row_count"] == run.metrics["row_count"]
        assert {r["version"] for r in _quality_rows(spark, spark_settings, run.run_id)} == {run.version}
    engines = [r["engineInfo"] for r in spark.sql(f"DESCRIBE HISTORY {metrics_table}").limit(1).collect()]
    assert engines[0].startswith("delta-rs")  # the last run's rows: no Spark job, no Spark commit
    spark.table(metrics_table).limit(0).writeTo(metrics_table).append()  # Spark still commits after it


@in_process_only
def test_a_table_natively_appended_to_is_found_without_a_spark_job(
    spark: SparkSession, spark_settings: ThimbleSettings, table_name: str
) -> None:
    """Each run appends its metrics natively; the next run's existence check must not replay the metrics
    table's log in Spark to learn that it exists."""
    _two_runs_with_one_metric(spark, spark_settings, table_name)
    database = spark_settings.warehouse.database
    metrics_table = f"{database}.thimble_quality"
    sc = spark.sparkContext
    sc.setJobGroup("exists-check", "exists-check")
    try:
        assert _tables.exists(spark, metrics_table)
    finally:
        sc.setJobGroup("other", "other")
    assert jobs_in_group(spark, "exists-check") == 0
    assert _tables.exists(spark, f"spark_catalog.{metrics_table}")  # a name the metastore does not parse
    assert not _tables.exists(spark, f"{database}.no_such_table")
    spark.range(1).createOrReplaceTempView("a_view_not_in_the_metastore")
    assert _tables.exists(spark, "a_view_not_in_the_metastore")
