"""Each cleanse step, validation rule and quality metric against a real Spark session."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from thimble.etl._connect import jobs_in_group
from thimble.etl.cleanse import apply_step
from thimble.etl.config import CheckConfig, MetricConfig, TableConfig
from thimble.etl.quality import compute_metrics, evaluate, observe_metrics
from thimble.etl.validate import FAILED, flag
from thimble.testing import in_process_only

from .conftest import config

pytestmark = pytest.mark.integration

SCHEMA = "id int, name string, city string, amount string, ts string, seen timestamp"
ROWS = [
    (1, "  Ann ", "paris", "10.5", "2026-01-02 10:00", datetime(2026, 1, 1)),
    (2, "Bob", None, "x", "bad", datetime(2026, 1, 3)),
    (2, "Bobby", "rome", "7", "2026-01-03 11:30", datetime(2026, 1, 5)),
]


@pytest.fixture(scope="module")
def df(spark: SparkSession) -> DataFrame:
    return spark.createDataFrame(ROWS, SCHEMA)


def _step(df: DataFrame, step: dict[str, Any]) -> list[Any]:
    cfg: TableConfig = config(table="t", source={"type": "table", "table": "x"}, cleanse=[step])
    return [tuple(r) for r in apply_step(df, cfg.cleanse[0]).orderBy("id", "seen").collect()]


def test_trim_case_regex(df: DataFrame) -> None:
    assert _step(df, {"step": "trim", "columns": ["name"]})[0][1] == "Ann"
    assert [r[2] for r in _step(df, {"step": "case", "columns": ["city"], "to": "upper"})] == [
        "PARIS",
        None,
        "ROME",
    ]
    rows = _step(df, {"step": "regex_replace", "column": "name", "pattern": "[^A-Za-z]", "replacement": ""})
    assert rows[0][1] == "Ann"


def test_cast_parse_fill_rename(df: DataFrame) -> None:
    assert [r[3] for r in _step(df, {"step": "cast", "columns": {"amount": "double"}})] == [10.5, None, 7.0]
    parsed = _step(
        df, {"step": "parse_timestamp", "column": "ts", "format": "yyyy-MM-dd HH:mm", "output": "at"}
    )
    assert [r[6] for r in parsed] == [datetime(2026, 1, 2, 10), None, datetime(2026, 1, 3, 11, 30)]
    as_date = _step(
        df, {"step": "parse_timestamp", "column": "ts", "format": "yyyy-MM-dd HH:mm", "to": "date"}
    )
    assert as_date[0][4] == date(2026, 1, 2)
    assert [r[2] for r in _step(df, {"step": "fill", "values": {"city": "unknown"}})] == [
        "paris",
        "unknown",
        "rome",
    ]
    renamed = apply_step(
        df,
        config(
            table="t",
            source={"type": "table", "table": "x"},
            cleanse=[{"step": "rename", "columns": {"city": "town"}}],
        ).cleanse[0],
    )
    assert "town" in renamed.columns
    assert "city" not in renamed.columns


def test_drop_where_dedupe_sql(df: DataFrame) -> None:
    assert [r[0] for r in _step(df, {"step": "drop_where", "condition": "city IS NULL"})] == [1, 2]
    latest = _step(df, {"step": "dedupe", "keys": ["id"], "order_by": "seen"})
    assert [(r[0], r[1]) for r in latest] == [(1, "  Ann "), (2, "Bobby")]
    earliest = _step(df, {"step": "dedupe", "keys": ["id"], "order_by": "seen", "keep": "earliest"})
    assert [(r[0], r[1]) for r in earliest] == [(1, "  Ann "), (2, "Bob")]
    assert [
        r[6] for r in _step(df, {"step": "sql", "column": "label", "expression": "concat(name, '@', id)"})
    ][1] == "Bob@2"


def test_every_rule_marks_failing_rows(df: DataFrame) -> None:
    cfg = config(
        table="t",
        source={"type": "table", "table": "x"},
        validate_=[
            {"rule": "not_null", "columns": ["city"]},
            {"rule": "unique", "columns": ["id"]},
            {"rule": "range", "column": "id", "min": 1, "max": 1},
            {"rule": "allowed_values", "column": "city", "values": ["paris"]},
            {"rule": "regex", "column": "amount", "pattern": "^[0-9.]+$"},
            {"rule": "sql", "condition": "length(name) < 5", "name": "short name"},
        ],
    )
    flagged = {r["name"]: sorted(r[FAILED]) for r in flag(df, cfg.validate_).collect()}
    assert flagged["  Ann "] == ["short name"]
    assert flagged["Bob"] == sorted(["not_null(city)", "unique(id)", "range(id)", "regex(amount)"])
    assert flagged["Bobby"] == sorted(["unique(id)", "range(id)", "allowed_values(city)", "short name"])


def test_distinct_counts_of_every_column_type_are_within_the_sketchs_error(spark: SparkSession) -> None:
    columns = {
        "tiny": "CAST(id % 100 AS tinyint)",
        "small": "CAST(id % 5000 AS smallint)",
        "whole": "CAST(id AS int)",
        "big": "id * 1000003",
        "text": "concat('k', id % 30000)",
        "real": "id / 7.0D",
        # -0.0 and 0.0, one distinct value (a CASE of the two literals is folded by Spark into one of them)
        "signed_zero": "(id % 2 * 2 - 1) * 0.0D",
        "nested_zero": "named_struct('z', array((id % 2 * 2 - 1) * 0.0D), 'k', id % 3)",
        "money": "CAST(id % 25000 AS decimal(12, 2))",
        "flag": "id % 3 = 0",
        "day": "date_add(DATE'2020-01-01', CAST(id % 2000 AS int))",
        "at": "timestamp_seconds(id * 60)",
        "pair": "named_struct('a', id % 700, 'b', id % 11)",
        "sparse": "CASE WHEN id % 4 = 0 THEN id END",
    }
    df = spark.range(40_000).selectExpr(*[f"{expr} AS {name}" for name, expr in columns.items()])
    exact = df.agg(*[F.countDistinct(name).alias(name) for name in columns]).first()
    assert exact is not None
    metrics = [MetricConfig(metric="distinct_count", column=name) for name in columns]
    metrics += [MetricConfig(metric="uniqueness", column=name) for name in columns]
    values = compute_metrics(df, metrics)
    for name in columns:
        estimate = values[f"distinct_count:{name}"]
        assert estimate == pytest.approx(exact[name], rel=0.02), name
        non_null = 10_000 if name == "sparse" else 40_000
        assert values[f"uniqueness:{name}"] == pytest.approx(min(exact[name] / non_null, 1.0), rel=0.02), name


@in_process_only
def test_metrics_in_one_spark_job(spark: SparkSession, df: DataFrame) -> None:
    metrics = [
        MetricConfig(metric="row_count"),
        MetricConfig(metric="completeness", column="city"),
        MetricConfig(metric="distinct_count", column="id"),
        MetricConfig(metric="uniqueness", column="id"),
        MetricConfig(metric="min", column="seen"),
        MetricConfig(metric="max", column="id"),
        MetricConfig(metric="mean", column="id"),
        MetricConfig(metric="stddev", column="id"),
        MetricConfig(metric="quantile", column="id", quantile=0.5),
        MetricConfig(metric="sql", name="total", expression="sum(try_cast(amount AS double))"),
    ]
    sc = spark.sparkContext
    sc.setJobGroup("etl-test-metrics", "metrics")
    values = compute_metrics(df, metrics)
    assert jobs_in_group(spark, "etl-test-metrics") == 1
    assert values["row_count"] == 3
    assert values["completeness:city"] == pytest.approx(2 / 3)
    assert values["distinct_count:id"] == 2
    assert values["uniqueness:id"] == pytest.approx(2 / 3)
    assert values["min:seen"] == datetime(2026, 1, 1).timestamp()
    assert values["mean:id"] == pytest.approx(5 / 3)
    assert values["quantile:id:0.5"] == 2
    assert values["total"] == pytest.approx(17.5)


def test_quantiles_of_a_column_share_one_sketch_and_match_their_own(spark: SparkSession) -> None:
    df = spark.range(1001).selectExpr(
        "id", "CASE WHEN id % 7 = 0 THEN NULL ELSE id * 1.5 END AS score", "timestamp_seconds(id * 60) AS at"
    )
    levels = [0.95, 0.5, 0.05, 0.5]
    metrics = [
        *[MetricConfig(metric="quantile", column="score", quantile=q) for q in levels],
        MetricConfig(metric="mean", column="id"),
        MetricConfig(metric="quantile", column="at", quantile=0.25),
    ]
    expected = {
        f"quantile:score:{q}": df.agg(F.percentile_approx("score", q, 10000)).first()[0] for q in levels
    }
    expected["mean:id"] = 500.0
    expected["quantile:at:0.25"] = df.agg(F.percentile_approx("at", 0.25, 10000)).first()[0].timestamp()
    assert compute_metrics(df, metrics) == expected
    observed = observe_metrics(df, metrics)
    if observed is not None:  # observed in process; over Connect the write's own job measures them
        plan = observed.df._jdf.queryExecution().analyzed().toString()
        assert plan.count("percentile_approx(score") == 1, plan
        observed.df.write.format("noop").mode("overwrite").save()
        assert observed.values() == (1001, expected)
    nothing = compute_metrics(df.limit(0), metrics)
    assert nothing == dict.fromkeys(expected)


def test_checks_threshold_and_history() -> None:
    checks = [
        CheckConfig(metric="row_count", min=10, severity="warn"),
        CheckConfig(metric="row_count", max_change=0.5, over_last=3),
        CheckConfig(metric="missing", max=1),
    ]
    results = evaluate(checks, {"row_count": 3.0}, lambda metric, n: [10.0, 10.0])
    assert [r.status for r in results] == ["warn", "fail", "fail"]
    assert "trailing mean 10" in results[1].detail
    ok = evaluate(checks[:2], {"row_count": 12.0}, lambda metric, n: [])
    assert [r.status for r in ok] == ["pass", "pass"]
    assert ok[1].detail == "no history yet"
