"""Quality: metrics of the rows about to be written, fused into ONE Spark aggregation (or observed by the
write itself, when nothing waits for them and the session runs in process), and checks on them.

Checks are thresholds (``min``/``max``) or a change against the table's own history (``max_change``
relative to the trailing mean of the last ``over_last`` committed runs). Metrics and check results are
stored in the metrics table, keyed by table, run id and version.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from thimble.etl import _sql
from thimble.etl._connect import observes_writes
from thimble.etl._floats import holds_float, zero_signed
from thimble.etl.config import CheckConfig, MetricConfig

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, Observation, SparkSession
    from pyspark.sql.types import DataType

Status = Literal["pass", "warn", "fail"]
# Distinct counts are estimated with an HLL sketch so every metric stays in one scan (exact distinct
# counts would need a shuffle per column). 2**16 buckets: a relative standard error of 0.4%, and a sketch
# whose per-row cost does not grow with its size (Spark's HyperLogLog++ at 1% cost ten times more per row).
DISTINCT_SKETCH_LG_K = 16
# The types the sketch takes as they are; any other is counted by its text.
SKETCHED_TYPES = frozenset({"int", "bigint", "string", "binary"})
QUANTILE_ACCURACY = 10000
History = Callable[[str, int], list[float]]


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check."""

    name: str
    metric: str
    severity: str
    status: Status
    value: float | None
    detail: str


def metric_expression(metric: MetricConfig, types: Mapping[str, DataType]) -> Column:
    """The aggregate expression of one metric other than a quantile (a double), given the frame's column
    types; quantiles are aggregated per column, in one sketch, by :class:`_Aggregates`."""
    from pyspark.sql import functions as F

    col = _sql.col(metric.column) if metric.column else None
    rows = F.count(F.lit(1))
    kind = metric.metric
    if kind == "row_count":
        expr = rows
    elif kind == "sql":
        expr = F.expr(metric.expression or "")
    else:
        assert col is not None
        assert metric.column is not None
        kind_of_column = types.get(metric.column)
        type_name = kind_of_column.simpleString() if kind_of_column is not None else ""
        if type_name in ("date", "timestamp", "timestamp_ntz") and kind in ("min", "max"):
            col = col.cast("timestamp").cast("double")
        if kind == "completeness":
            expr = F.count(col) / F.nullif(rows, F.lit(0))
        elif kind == "distinct_count":
            expr = _distinct(col, kind_of_column)
        elif kind == "uniqueness":
            expr = F.least(_distinct(col, kind_of_column) / F.nullif(F.count(col), F.lit(0)), F.lit(1.0))
        elif kind == "min":
            expr = F.min(col)
        elif kind == "max":
            expr = F.max(col)
        elif kind == "mean":
            expr = F.avg(col)
        else:
            assert kind == "stddev", kind
            expr = F.stddev_samp(col)
    return expr.cast("double")


@dataclass(frozen=True)
class _Aggregates:
    """The columns of one fused aggregation of ``metrics``, and where each metric's value is in its row.

    The quantiles of one column share one sketch (``percentile_approx`` of all of them): Spark merges
    equal aggregates in ``agg`` but computes each one of ``observe`` on its own.
    """

    columns: list[Column]
    places: list[tuple[str, int | None]]
    """Per metric: its column's name, and its index when that column holds an array of quantiles."""

    @staticmethod
    def of(metrics: Sequence[MetricConfig], types: Mapping[str, DataType]) -> _Aggregates:
        from pyspark.sql import functions as F

        quantiles: dict[str, list[float]] = {}
        for metric in metrics:
            if metric.metric == "quantile":
                assert metric.column  # the config requires both
                assert metric.quantile is not None
                quantiles.setdefault(metric.column, []).append(metric.quantile)
        columns: list[Column] = []
        places: list[tuple[str, int | None]] = []
        seen = dict.fromkeys(quantiles, 0)
        sketches = {column: f"q{j}" for j, column in enumerate(quantiles)}
        for i, metric in enumerate(metrics):
            if metric.metric == "quantile":
                assert metric.column
                places.append((sketches[metric.column], seen[metric.column]))
                seen[metric.column] += 1
            else:
                columns.append(metric_expression(metric, types).alias(f"m{i}"))
                places.append((f"m{i}", None))
        for column, sketch in sketches.items():
            levels = F.array(*[F.lit(q) for q in quantiles[column]])
            columns.append(
                F.percentile_approx(_ranked(column, types.get(column)), levels, QUANTILE_ACCURACY)
                .cast("array<double>")
                .alias(sketch)
            )
        return _Aggregates(columns, places)

    def values(self, row: Mapping[str, Any], metrics: Sequence[MetricConfig]) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for metric, (name, index) in zip(metrics, self.places, strict=True):
            value = row[name]
            if index is not None:
                value = value[index] if value is not None else None
            # NaN is no value; -0.0 is 0.0 (which of the two equal zeros an aggregate keeps depends on
            # the order it met them in, which differs between a write and an aggregation)
            out[metric.metric_name] = (
                None
                if value is None or (isinstance(value, float) and math.isnan(value))
                else float(value) + 0.0
            )
        return out


def _ranked(column: str, kind: DataType | None) -> Column:
    """The values of ``column`` a quantile ranks: its numbers, NaN left out like null (NaN is not a number to
    rank; Spark's quantile sketch would place it anywhere). ±inf rank at the ends."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    col = _sql.col(column)
    if isinstance(kind, T.FloatType | T.DoubleType):
        return F.when(~F.isnan(col), col)
    return col


def _distinct(col: Column, kind: DataType | None) -> Column:
    """The estimated number of distinct non-null values of ``col`` (of Spark type ``kind``)."""
    from pyspark.sql import functions as F

    name = kind.simpleString() if kind is not None else ""
    if name in ("tinyint", "smallint"):
        col = col.cast("int")
    elif name not in SKETCHED_TYPES:
        if kind is not None and holds_float(kind):
            # -0.0 is 0.0, as count(DISTINCT ...) counts it, at any depth (its text differs)
            col = zero_signed(col, kind)
        col = col.cast("string")
    return F.hll_sketch_estimate(F.hll_sketch_agg(col, DISTINCT_SKETCH_LG_K))


@contextmanager
def _single_job(spark: SparkSession) -> Iterator[None]:
    """Adaptive execution submits each shuffle stage as its own job; one aggregation needs one job."""
    previous = spark.conf.get("spark.sql.adaptive.enabled", "true")
    spark.conf.set("spark.sql.adaptive.enabled", "false")
    try:
        yield
    finally:
        spark.conf.set("spark.sql.adaptive.enabled", previous or "true")


def compute_metrics(df: DataFrame, metrics: Sequence[MetricConfig]) -> dict[str, float | None]:
    """Every metric of ``df`` in one Spark job (a single fused aggregation)."""
    if not metrics:
        return {}
    aggregates = _Aggregates.of(metrics, {f.name: f.dataType for f in df.schema.fields})
    with _single_job(df.sparkSession):
        row = df.agg(*aggregates.columns).collect()[0]
    return aggregates.values(row.asDict(), metrics)


ROWS = "rows"


class ObservedMetrics:
    """Metrics gathered by the write itself (Spark's ``DataFrame.observe``), with no pass of their own.

    ``df`` is the frame to write; once an action on it has finished, :meth:`values` returns the row
    count and every metric, as :func:`compute_metrics` would on the same rows.
    """

    def __init__(
        self,
        df: DataFrame,
        observation: Observation,
        metrics: Sequence[MetricConfig],
        aggregates: _Aggregates,
    ) -> None:
        self.df = df
        self._observation = observation
        self._metrics = list(metrics)
        self._aggregates = aggregates

    def values(self, timeout: float = 30.0) -> tuple[int, dict[str, float | None]] | None:
        """(rows, metrics) of the action run on :attr:`df`; None when Spark has not reported them."""
        # Spark completes the observation once the action's execution has ended: wait for it with a bound
        # (``Observation.get`` would block forever on an action that never reports it).
        java = getattr(self._observation, "_jo", None)
        if java is not None:
            future = java.future()
            deadline = time.monotonic() + timeout
            while not future.isCompleted():
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.005)
        row = self._observation.get
        return int(row[ROWS]), self._aggregates.values(row, self._metrics)


def observe_metrics(df: DataFrame, metrics: Sequence[MetricConfig]) -> ObservedMetrics | None:
    """``df`` observed for its row count and ``metrics``; None when one cannot be observed in the pass.

    Spark refuses some aggregates in observed metrics (e.g. ``count(DISTINCT ...)`` in a ``sql``
    metric), and a write over Spark Connect reports no observed metrics: those runs measure in their
    own Spark job (an aggregation) instead.
    """
    from pyspark.errors import AnalysisException
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    if not observes_writes(df.sparkSession):
        return None
    types = {f.name: f.dataType for f in df.schema.fields}
    observation = Observation(f"thimble-quality-{uuid.uuid4().hex}")
    try:
        aggregates = _Aggregates.of(metrics, types)
        observed = df.observe(observation, F.count(F.lit(1)).alias(ROWS), *aggregates.columns)
    except AnalysisException:
        return None
    return ObservedMetrics(observed, observation, metrics, aggregates)


def evaluate(
    checks: Sequence[CheckConfig], values: dict[str, float | None], history: History
) -> list[CheckResult]:
    """Evaluate every check against this run's metric values and the table's history."""
    results = []
    for check in checks:
        value = values.get(check.metric)
        problems: list[str] = []
        notes: list[str] = []
        if value is None:
            problems.append("no value (no rows, or only nulls)")
        else:
            if check.min is not None and value < check.min:
                problems.append(f"{value:g} < {check.min:g}")
            if check.max is not None and value > check.max:
                problems.append(f"{value:g} > {check.max:g}")
            if check.max_change is not None:
                past = history(check.metric, check.over_last)
                if not past:
                    notes.append("no history yet")
                else:
                    mean = sum(past) / len(past)
                    change = abs(value - mean) / abs(mean) if mean else (0.0 if value == 0 else math.inf)
                    text = f"{value:g} vs trailing mean {mean:g} of {len(past)} run(s): {change:+.0%}"
                    (problems if change > check.max_change else notes).append(text)
        status: Status = "pass" if not problems else ("fail" if check.severity == "fail" else "warn")
        detail = "; ".join(problems or notes) or (f"{value:g}" if value is not None else "")
        results.append(CheckResult(check.check_name, check.metric, check.severity, status, value, detail))
    return results


def metric_rows(
    table: str,
    run_id: str,
    version: int | None,
    committed: bool,
    at: datetime,
    values: dict[str, float | None],
    results: Sequence[CheckResult],
) -> list[tuple[object, ...]]:
    """Rows of the metrics table for one run."""
    rows: list[tuple[object, ...]] = [
        (table, run_id, version, committed, at, "metric", name, value, None, None, None)
        for name, value in values.items()
    ]
    rows += [
        (table, run_id, version, committed, at, "check", r.name, r.value, r.severity, r.status, r.detail)
        for r in results
    ]
    return rows


METRICS_SCHEMA = (
    "table string, run_id string, version bigint, committed boolean, run_at timestamp, kind string, "
    "name string, value double, severity string, status string, detail string"
)
