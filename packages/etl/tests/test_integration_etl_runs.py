"""Whole runs against real Delta tables: gating, failures, write modes, schema policy, landing source."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession

from thimble.common.config import ThimbleSettings
from thimble.etl import SchemaMismatchError, history, run_table, table_version, write_dataframe
from thimble.etl.errors import ConfigError, EtlError
from thimble.testing import OVER_CONNECT, in_process_only

from .conftest import config

pytestmark = pytest.mark.integration

SCHEMA = {"columns": {"id": "int", "name": "string", "amount": "double"}}


def _quality(min_rows: int) -> dict[str, object]:
    return {
        "metrics": [{"metric": "row_count"}, {"metric": "mean", "column": "amount"}],
        "checks": [
            {"metric": "row_count", "min": min_rows},
            {"metric": "row_count", "max_change": 0.5, "over_last": 3, "severity": "warn"},
        ],
    }


def test_failing_check_blocks_the_write_but_keeps_quarantine_and_metrics(
    spark: SparkSession, spark_settings: ThimbleSettings, table_name: str, json_source: Callable[..., str]
) -> None:
    db = spark_settings.warehouse.database
    path = json_source([{"id": i, "name": f"n{i}", "amount": float(i)} for i in range(4)])
    base = {
        "table": table_name,
        "source": {"type": "files", "path": path, "format": "json"},
        "schema_": SCHEMA,
    }
    rules = [{"rule": "range", "column": "amount", "min": 0, "max": 2}]
    ok = run_table(config(**base, validate_=rules, quality=_quality(1)), spark=spark, settings=spark_settings)
    assert ok.status == "committed"
    assert (ok.rows_read, ok.rows_quarantined, ok.inserted) == (4, 1, 3)
    assert (ok.metrics["row_count"], ok.metrics["mean:amount"]) == (3.0, 1.0)  # of the rows that passed
    if not OVER_CONNECT:
        assert ok.spark_jobs["quality"] == 0  # observed by the job that counted the plan
    version = table_version(table_name, spark=spark, settings=spark_settings)

    json_source([{"id": 9, "name": "x", "amount": 1.0}, {"id": 10, "name": "y", "amount": 99.0}])
    blocked = run_table(
        config(**base, validate_=rules, quality=_quality(2)), spark=spark, settings=spark_settings
    )
    assert blocked.status == "blocked"
    assert [c.status for c in blocked.checks] == ["fail", "warn"]
    assert "trailing mean 3" in blocked.checks[1].detail
    assert table_version(table_name, spark=spark, settings=spark_settings) == version
    assert spark.table(f"{db}.{table_name}").count() == 3
    quarantine = spark.table(f"{db}.{table_name}_quarantine").collect()
    assert len(quarantine) == 2
    assert {r.run_id for r in quarantine} == {ok.run_id, blocked.run_id}
    assert all(r.failed_rules == ["range(amount)"] for r in quarantine)
    assert json.loads(next(r.record for r in quarantine if r.run_id == blocked.run_id))["id"] == 10
    runs = spark.table(f"{db}.thimble_quality").filter(f"run_id = '{blocked.run_id}'").collect()
    assert {
        (r.kind, r.name, r.committed, r.version) for r in runs if r.kind == "metric" and r.name == "row_count"
    } == {("metric", "row_count", False, version)}
    assert history(table_name, spark=spark, settings=spark_settings)[0].checks == {
        "pass": 2,
        "warn": 0,
        "fail": 0,
    }


def test_failure_midway_leaves_the_previous_version(
    spark: SparkSession, spark_settings: ThimbleSettings, table_name: str, json_source: Callable[..., str]
) -> None:
    path = json_source([{"id": 1, "name": "a", "amount": 1.0}])
    base = {
        "table": table_name,
        "source": {"type": "files", "path": path, "format": "json"},
        "schema_": SCHEMA,
    }
    run_table(config(**base), spark=spark, settings=spark_settings)
    version = table_version(table_name, spark=spark, settings=spark_settings)
    json_source([{"id": 2, "name": "boom", "amount": 1.0}])
    exploding = [
        {
            "step": "sql",
            "column": "name",
            "expression": "if(name = 'boom', raise_error('disk on fire'), name)",
        }
    ]
    with pytest.raises(EtlError, match="disk on fire"):
        run_table(config(**base, cleanse=exploding), spark=spark, settings=spark_settings)
    assert table_version(table_name, spark=spark, settings=spark_settings) == version


def test_write_modes_and_schema_policy(
    spark: SparkSession, spark_settings: ThimbleSettings, table_name: str
) -> None:
    db = spark_settings.warehouse.database
    full = f"{db}.{table_name}"

    def frame(rows: list[tuple[int, str, str]]) -> object:
        return spark.createDataFrame(rows, "id int, day string, value string")

    first = write_dataframe(
        frame([(1, "d1", "a"), (2, "d2", "b")]),
        table_name,
        mode="append",
        partition_by=["day"],
        settings=spark_settings,
    )
    assert first.status == "committed"
    write_dataframe(frame([(3, "d1", "c")]), table_name, mode="append", settings=spark_settings)
    assert spark.table(full).count() == 3
    write_dataframe(
        frame([(9, "d1", "z")]), table_name, mode="overwrite", partition_by=["day"], settings=spark_settings
    )
    assert sorted((r.id, r.day) for r in spark.table(full).collect()) == [(2, "d2"), (9, "d1")]
    merged = write_dataframe(
        frame([(9, "d1", "new"), (4, "d3", "d"), (2, "d2", "b")]),
        table_name,
        mode="merge",
        keys=["id"],
        settings=spark_settings,
    )
    assert (merged.inserted, merged.updated) == (1, 1)
    assert sorted(tuple(r) for r in spark.table(full).select("id", "value").collect()) == [
        (2, "b"),
        (4, "d"),
        (9, "new"),
    ]
    dupes = write_dataframe(
        frame([(5, "d1", "x"), (5, "d1", "y")]),
        table_name,
        mode="merge",
        keys=["id"],
        settings=spark_settings,
    )
    assert dupes.rows_quarantined == 2
    assert dupes.status == "unchanged"

    wider = spark.createDataFrame([(7, "d1", "v", 1.5)], "id int, day string, value string, extra double")
    before = table_version(table_name, spark=spark, settings=spark_settings)
    with pytest.raises(SchemaMismatchError, match="new column"):
        write_dataframe(wider, table_name, mode="append", settings=spark_settings)
    assert table_version(table_name, spark=spark, settings=spark_settings) == before
    write_dataframe(wider, table_name, mode="append", allow_new_columns=True, settings=spark_settings)
    assert "extra" in spark.table(full).columns
    props = {r.key: r.value for r in spark.sql(f"SHOW TBLPROPERTIES {full}").collect()}
    assert props["delta.enableChangeDataFeed"] == "true"


def test_write_dataframe_records_caller_metadata_and_can_replace_the_schema(
    spark: SparkSession, spark_settings: ThimbleSettings, table_name: str
) -> None:
    full = f"{spark_settings.warehouse.database}.{table_name}"
    first = spark.createDataFrame([(1, 0.5)], "id int, score double")
    tag = {"model": "churn", "model_version": 1, "where": None}
    write_dataframe(first, table_name, mode="overwrite", metadata=tag, settings=spark_settings)
    write_dataframe(first, table_name, mode="append", settings=spark_settings)
    second = spark.createDataFrame([(2, "high")], "id bigint, band string")
    with pytest.raises(SchemaMismatchError, match="types changed"):
        write_dataframe(second, table_name, mode="overwrite", settings=spark_settings)
    with pytest.raises(ConfigError, match="overwrite_schema needs mode 'overwrite'"):
        write_dataframe(second, table_name, mode="append", overwrite_schema=True, settings=spark_settings)
    with pytest.raises(ConfigError, match="metadata must be JSON"):
        write_dataframe(
            second, table_name, mode="overwrite", metadata={"at": object()}, settings=spark_settings
        )
    replaced = write_dataframe(
        second, table_name, mode="overwrite", overwrite_schema=True, metadata={"model_version": 2},
        settings=spark_settings,
    )  # fmt: skip
    assert (replaced.status, replaced.version) == ("committed", 2)
    assert [tuple(r) for r in spark.table(full).collect()] == [(2, "high")]
    assert spark.table(full).schema.simpleString() == "struct<id:bigint,band:string>"
    assert [v.metadata for v in history(table_name, spark=spark, settings=spark_settings)] == [
        {"model_version": 2},
        {},
        tag,
    ]
    props = {r.key: r.value for r in spark.sql(f"SHOW TBLPROPERTIES {full}").collect()}
    assert props["delta.enableChangeDataFeed"] == "true"
    emptied = write_dataframe(
        second.limit(0), table_name, mode="overwrite", overwrite_schema=True, settings=spark_settings
    )
    assert (emptied.status, emptied.version, spark.table(full).count()) == ("committed", 3, 0)


@in_process_only
def test_write_dataframe_evaluates_its_input_once(
    spark: SparkSession, spark_settings: ThimbleSettings, table_name: str
) -> None:
    evaluated = spark.sparkContext.accumulator(0)

    def score(batches: Iterator[Any]) -> Iterator[Any]:  # a costly scorer with side effects of its own
        for batch in batches:
            evaluated.add(len(batch))
            yield batch.assign(id=batch["id"].astype("int32"), score=batch["id"] / 10)

    scored = spark.range(20).mapInPandas(score, "id int, score double")
    result = write_dataframe(
        scored,
        table_name,
        mode="merge",
        keys=["id"],
        quality={
            "metrics": [{"metric": "row_count"}, {"metric": "mean", "column": "score"}],
            "checks": [{"metric": "row_count", "min": 1}],
        },
        settings=spark_settings,
    )
    assert (result.status, result.rows_read, result.inserted) == ("committed", 20, 20)
    assert result.metrics["mean:score"] == pytest.approx(0.95)
    assert evaluated.value == 20


@in_process_only
def test_a_run_leaves_the_callers_job_group_as_it_found_it(
    spark: SparkSession, spark_settings: ThimbleSettings, table_name: str
) -> None:
    context = spark.sparkContext
    context.setJobGroup("callers-group", "the caller's jobs")
    try:
        result = write_dataframe(
            spark.range(3).selectExpr("cast(id as int) AS id"), table_name, settings=spark_settings
        )
        assert result.status == "committed"
        assert context.getLocalProperty("spark.jobGroup.id") == "callers-group"
        assert context.getLocalProperty("spark.job.description") == "the caller's jobs"
        context.setLocalProperty("spark.jobGroup.id", None)  # type: ignore[arg-type]
        write_dataframe(
            spark.range(3).selectExpr("cast(id as int) AS id"), table_name, settings=spark_settings
        )
        assert context.getLocalProperty("spark.jobGroup.id") is None
    finally:
        context.setLocalProperty("spark.jobGroup.id", None)  # type: ignore[arg-type]
        context.setLocalProperty("spark.job.description", None)  # type: ignore[arg-type]


def _land(root: Path, date: str, name: str, rows: list[dict[str, object]]) -> None:
    folder = root / f"date={date}"
    folder.mkdir(parents=True, exist_ok=True)
    for i, row in enumerate(rows):
        row.update(
            {
                "_kafka_topic": "events",
                "_kafka_partition": 0,
                "_kafka_offset": i,
                "_landed_at": "2026-01-01T00:00:00",
            }
        )
    pq.write_table(pa.Table.from_pylist(rows), folder / name)


def test_landing_source_reads_only_new_files(
    spark: SparkSession, spark_settings: ThimbleSettings, table_name: str
) -> None:
    dataset = f"events-{table_name}"
    root = Path(spark_settings.warehouse.landing) / dataset
    _land(
        root,
        "2026-01-01",
        "part-0001.parquet",
        [{"client_id": "a", "amount": 1.0}, {"client_id": "b", "amount": 2.0}],
    )
    _land(root, "2026-01-01", ".part-0002.parquet", [{"client_id": "tmp", "amount": 0.0}])
    _land(root, "2026-01-01", "_part-0003.parquet", [{"client_id": "tmp", "amount": 0.0}])
    cfg = config(table=table_name, source={"type": "landing", "dataset": dataset})
    first = run_table(cfg, spark=spark, settings=spark_settings)
    assert (first.status, first.rows_read) == ("committed", 2)
    assert run_table(cfg, spark=spark, settings=spark_settings).status == "no_new_data"
    _land(root, "2026-01-02", "part-0001.parquet", [{"client_id": "c", "amount": 3.0}])
    third = run_table(cfg, spark=spark, settings=spark_settings)
    assert third.rows_read == 1
    rows = spark.table(f"{spark_settings.warehouse.database}.{table_name}").collect()
    assert sorted(r.client_id for r in rows) == ["a", "b", "c"]
    assert "_kafka_offset" in rows[0].asDict()


def test_rows_read_are_counted_apart_only_when_a_cleanse_step_can_drop_rows(
    spark: SparkSession, spark_settings: ThimbleSettings, table_name: str, json_source: Callable[..., str]
) -> None:
    path = json_source([{"id": i, "name": f" n{i} ", "amount": float(i)} for i in range(6)])
    base = {
        "table": table_name,
        "source": {"type": "files", "path": path, "format": "json"},
        "schema_": SCHEMA,
    }
    per_row = [{"step": "trim", "columns": ["name"]}, {"step": "fill", "values": {"name": "?"}}]
    kept = run_table(config(**base, cleanse=per_row), spark=spark, settings=spark_settings)
    assert (kept.rows_read, kept.rows_cleansed, kept.inserted) == (6, 6, 6)
    if not OVER_CONNECT:
        assert kept.spark_jobs.get("read", 0) == 0  # counted with the validation, in the same pass

    dropping = [*per_row, {"step": "drop_where", "condition": "amount >= 4"}]
    dropped = run_table(
        config(**base, cleanse=dropping, write={"mode": "overwrite"}), spark=spark, settings=spark_settings
    )
    assert (dropped.rows_read, dropped.rows_cleansed, dropped.inserted) == (6, 4, 4)
    if not OVER_CONNECT:
        assert dropped.spark_jobs["read"] >= 1


@in_process_only
def test_a_load_run_again_in_the_same_session_compiles_almost_no_code(
    spark: SparkSession, spark_settings: ThimbleSettings, table_name: str, json_source: Callable[..., str]
) -> None:
    """Spark compiles a plan's generated code once per session: a journal run has more classes than
    Spark's default cache of 100 holds, and compiled most of them again on every run."""
    compilations = spark.sparkContext._jvm.org.apache.spark.metrics.source.CodegenMetrics  # type: ignore[union-attr]
    cfg = config(
        table=table_name,
        source={"type": "files", "path": json_source([]), "format": "json"},
        schema_=SCHEMA,
        cleanse=[{"step": "trim", "columns": ["name"]}],
        validate_=[{"rule": "regex", "column": "name", "pattern": "^n[0-9]+$"}],
        quality={
            "metrics": [
                {"metric": "row_count"},
                {"metric": "uniqueness", "column": "id"},
                {"metric": "quantile", "column": "amount", "quantile": 0.5},
            ],
            "checks": [{"metric": "row_count", "min": 1}],
        },
        journal={"keys": ["id"], "track": ["name", "amount"], "deletes": "close"},
        write={"mode": "journal"},
    )
    counts = []
    for run in range(4):
        json_source([{"id": i, "name": f"n{i}", "amount": float(i * run)} for i in range(run, run + 5)])
        before = compilations.METRIC_COMPILATION_TIME().getCount()
        assert run_table(cfg, spark=spark, settings=spark_settings).status == "committed"
        counts.append(compilations.METRIC_COMPILATION_TIME().getCount() - before)
    assert counts[3] <= 10, f"classes compiled per run: {counts}"
