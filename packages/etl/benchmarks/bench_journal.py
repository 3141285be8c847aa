"""Journalize a snapshot into a history table with every module on, against a hand-written SCD2 MERGE.

    python packages/etl/benchmarks/bench_journal.py                      # 1M snapshot into 5M history
    python packages/etl/benchmarks/bench_journal.py --snapshot 100000 --history 500000

Both runs start from the same history (copies of one Delta table) and read the same snapshot
(Parquet). The snapshot has ``--changed`` of its keys changed, ``--new`` new keys, and ``--deleted`` of
the current keys missing (closed by both runs). Prints wall time, rows/s, peak JVM heap, Spark jobs of
the quality metrics (thimble: one fused aggregation; naive: one aggregation per metric) and the ratio.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from rich.console import Console
from rich.table import Table

from thimble.common.config import load_settings
from thimble.common.spark import build_spark_session
from thimble.etl import parse_table_config, run_table
from thimble.etl.config import EtlSettings, TableConfig
from thimble.etl.journal import row_hash
from thimble.etl.quality import compute_metrics

TRACK = ["segment", "score", "city"]
SEGMENTS = ["gold", "silver", "bronze", "new"]


def _peak_heap_reset(spark: SparkSession) -> None:
    for pool in spark.sparkContext._jvm.java.lang.management.ManagementFactory.getMemoryPoolMXBeans():  # type: ignore[union-attr]
        pool.resetPeakUsage()


def _peak_heap_mib(spark: SparkSession) -> float:
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    heap = jvm.java.lang.management.MemoryType.HEAP
    pools = jvm.java.lang.management.ManagementFactory.getMemoryPoolMXBeans()
    return float(sum(p.getPeakUsage().getUsed() for p in pools if p.getType() == heap)) / 2**20


def _build_inputs(spark: SparkSession, args: argparse.Namespace, work: Path) -> tuple[str, int]:
    """History table ``bench.history`` and the snapshot Parquet; returns (snapshot path, current keys)."""
    s = args.snapshot
    deleted, new, changed = int(s * args.deleted), int(s * args.new), int(s * args.changed)
    current_keys = s - new + deleted
    versions = max(1, round(args.history / current_keys))
    base = spark.range(current_keys * versions).select(
        (F.col("id") % current_keys).alias("k"), (F.col("id") / current_keys).cast("int").alias("v")
    )
    history = base.select(
        F.format_string("c%09d", "k").alias("client_id"),
        F.element_at(F.array(*[F.lit(x) for x in SEGMENTS]), (F.col("k") % 3 + 1).cast("int")).alias(
            "segment"
        ),
        (F.col("k") % 1000 / 10.0).alias("score"),
        F.concat(F.lit("city"), (F.col("k") % 50).cast("string")).alias("city"),
        F.col("v"),
    ).withColumn(
        "score", F.when(F.col("v") == versions - 1, F.col("score")).otherwise(F.col("score") + F.col("v") + 1)
    )
    history = history.withColumns(
        {
            "row_hash": row_hash(TRACK),
            "valid_from": F.timestamp_seconds(F.lit(1_700_000_000) + F.col("v") * 86400),
            "valid_to": F.when(
                F.col("v") < versions - 1,
                F.timestamp_seconds(F.lit(1_700_000_000) + (F.col("v") + 1) * 86400),
            ),
            "is_current": F.col("v") == versions - 1,
        }
    ).drop("v")
    spark.sql("DROP TABLE IF EXISTS bench.history")
    history.write.format("delta").option("delta.enableChangeDataFeed", "true").saveAsTable("bench.history")

    keys = spark.range(current_keys - deleted).union(spark.range(current_keys, current_keys + new))
    snapshot = keys.select(
        F.format_string("c%09d", "id").alias("client_id"),
        F.element_at(F.array(*[F.lit(x) for x in SEGMENTS]), (F.col("id") % 3 + 1).cast("int")).alias(
            "segment"
        ),
        (F.col("id") % 1000 / 10.0).alias("score"),
        F.concat(F.lit("city"), (F.col("id") % 50).cast("string")).alias("city"),
    )
    step = max(1, (current_keys - deleted) // max(changed, 1))
    is_changed = (F.col("client_id").substr(2, 9).cast("long") % step == 0) & (
        F.col("client_id").substr(2, 9).cast("long") < current_keys
    )
    snapshot = snapshot.withColumn("segment", F.when(is_changed, F.lit("new")).otherwise(F.col("segment")))
    path = str(work / "snapshot")
    snapshot.repartition(4).write.mode("overwrite").parquet(path)
    return path, current_keys


def _clone(spark: SparkSession, name: str, work: Path, round_: int) -> None:
    """A copy of bench.history (its files and log) registered as bench.<name>."""
    from delta.tables import DeltaTable

    location = DeltaTable.forName(spark, "bench.history").detail().first()["location"]  # type: ignore[index]
    target = work / "copies" / f"{name}-{round_}"  # a fresh path: Delta caches logs by path
    shutil.copytree(location.removeprefix("file:"), target)
    spark.sql(f"DROP TABLE IF EXISTS bench.{name}")
    spark.sql(f"CREATE TABLE bench.{name} USING delta LOCATION '{target}'")


def _config(path: str) -> TableConfig:
    return parse_table_config(
        {
            "table": "bench.thimble",
            "source": {"type": "files", "path": path, "format": "parquet"},
            "cleanse": [
                {"step": "trim", "columns": ["client_id", "city"]},
                {"step": "case", "columns": ["segment"], "to": "lower"},
                {"step": "fill", "values": {"city": "unknown"}},
            ],
            "validate": [
                {"rule": "not_null", "columns": ["client_id", "segment"]},
                {"rule": "range", "column": "score", "min": 0, "max": 1000},
                {"rule": "allowed_values", "column": "segment", "values": SEGMENTS},
                {"rule": "regex", "column": "client_id", "pattern": "^c[0-9]+$"},
            ],
            "quality": {
                "metrics": _metrics(),
                "checks": [{"metric": "row_count", "min": 1}, {"metric": "completeness:city", "min": 0.99}],
            },
            "journal": {"keys": ["client_id"], "track": TRACK, "deletes": "close"},
            "write": {"mode": "journal"},
        }
    )


def _metrics() -> list[dict[str, Any]]:
    return [
        {"metric": "row_count"},
        {"metric": "completeness", "column": "city"},
        {"metric": "completeness", "column": "segment"},
        {"metric": "distinct_count", "column": "segment"},
        {"metric": "uniqueness", "column": "client_id"},
        {"metric": "min", "column": "score"},
        {"metric": "max", "column": "score"},
        {"metric": "mean", "column": "score"},
        {"metric": "stddev", "column": "score"},
        {"metric": "quantile", "column": "score", "quantile": 0.5},
        {"metric": "quantile", "column": "score", "quantile": 0.95},
        {
            "metric": "sql",
            "name": "gold_rows",
            "expression": "sum(CASE WHEN segment = 'gold' THEN 1 ELSE 0 END)",
        },
    ]


def _baseline(spark: SparkSession, path: str) -> dict[str, int]:
    """The minimal hand-written SCD2: hash, join the current versions, one staged MERGE, deletes closed."""
    from delta.tables import DeltaTable

    now = F.current_timestamp()
    snap = spark.read.parquet(path).withColumn("row_hash", row_hash(TRACK))
    current = (
        spark.table("bench.baseline")
        .filter("is_current")
        .select("client_id", F.col("row_hash").alias("cur_hash"))
    )
    joined = snap.join(current, "client_id", "full")
    changed = joined.filter(
        F.col("row_hash").isNotNull()
        & (F.col("cur_hash").isNull() | (F.col("row_hash") != F.col("cur_hash")))
    )
    inserts = changed.select(F.lit(None).cast("string").alias("merge_key"), "client_id", *TRACK, "row_hash")
    closes = joined.filter(
        F.col("cur_hash").isNotNull()
        & (F.col("row_hash").isNull() | (F.col("row_hash") != F.col("cur_hash")))
    )
    closes = closes.select(F.col("client_id").alias("merge_key"), "client_id", *TRACK, "row_hash")
    staged = inserts.unionByName(closes)
    (
        DeltaTable.forName(spark, "bench.baseline")
        .alias("t")
        .merge(staged.alias("s"), "t.client_id = s.merge_key AND t.is_current")
        .whenMatchedUpdate(set={"valid_to": now, "is_current": F.lit(False)})
        .whenNotMatchedInsert(
            values={
                "client_id": "s.client_id", "segment": "s.segment", "score": "s.score", "city": "s.city",
                "row_hash": "s.row_hash", "valid_from": now, "valid_to": F.lit(None).cast("timestamp"), "is_current": F.lit(True),
            }
        )
        .execute()
    )  # fmt: skip
    metrics = DeltaTable.forName(spark, "bench.baseline").history(1).first()["operationMetrics"]  # type: ignore[index]
    return {k: int(v) for k, v in metrics.items() if k in ("numTargetRowsInserted", "numTargetRowsUpdated")}


def _metric_jobs(spark: SparkSession, df: DataFrame, config: TableConfig, fused: bool) -> tuple[int, float]:
    """Spark jobs and seconds for the config's metrics: one fused aggregation, or one per metric."""
    sc = spark.sparkContext
    group = f"bench-metrics-{'fused' if fused else 'naive'}"
    sc.setJobGroup(group, group)
    start = time.monotonic()
    if fused:
        compute_metrics(df, config.quality.metrics)
    else:
        for metric in config.quality.metrics:
            compute_metrics(df, [metric])
    seconds = time.monotonic() - start
    return len(sc.statusTracker().getJobIdsForGroup(group)), seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--snapshot", type=int, default=1_000_000, help="rows in the snapshot")
    parser.add_argument("--history", type=int, default=5_000_000, help="rows in the history table")
    parser.add_argument("--changed", type=float, default=0.10)
    parser.add_argument("--new", type=float, default=0.01)
    parser.add_argument("--deleted", type=float, default=0.005)
    parser.add_argument("--driver-memory", default="4g")
    parser.add_argument(
        "--repeat", type=int, default=2, help="rounds (alternating order); the median is reported"
    )
    parser.add_argument(
        "--workdir", default=None, help="where tables are written (default: a temporary folder)"
    )
    args = parser.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="thimble-bench-etl-"))
    settings = load_settings(
        EtlSettings,
        overrides={
            "warehouse": {"location": str(work / "tables"), "landing": str(work / "landing"), "metastore": str(work / "metastore"), "database": "bench"},
            "spark": {"driver_memory": args.driver_memory, "shuffle_partitions": 8},
        },
    )  # fmt: skip
    spark = build_spark_session(settings, app_name="thimble-etl-bench")
    console = Console(width=150)
    console.print(f"building {args.history:,}-row history and {args.snapshot:,}-row snapshot in {work} ...")
    path, _ = _build_inputs(spark, args, work)
    config = _config(path)
    baseline_times: list[float] = []
    ours_times: list[float] = []
    baseline_heap = ours_heap = 0.0
    for round_ in range(args.repeat):
        _clone(spark, "thimble", work, round_)
        _clone(spark, "baseline", work, round_)
        order = ("baseline", "thimble") if round_ % 2 == 0 else ("thimble", "baseline")
        for which in order:
            _peak_heap_reset(spark)
            start = time.monotonic()
            if which == "baseline":
                baseline_counts = _baseline(spark, path)
                baseline_times.append(time.monotonic() - start)
                baseline_heap = max(baseline_heap, _peak_heap_mib(spark))
            else:
                result = run_table(config, spark=spark, settings=settings)
                ours_times.append(time.monotonic() - start)
                ours_heap = max(ours_heap, _peak_heap_mib(spark))
        console.print(
            f"round {round_ + 1}: baseline {baseline_times[-1]:.1f} s, thimble-etl {ours_times[-1]:.1f} s"
        )
    baseline_s = statistics.median(baseline_times)
    ours_s = statistics.median(ours_times)

    snapshot = spark.read.parquet(path).cache()
    snapshot.count()
    fused_jobs, fused_s = _metric_jobs(spark, snapshot, config, fused=True)
    naive_jobs, naive_s = _metric_jobs(spark, snapshot, config, fused=False)
    rows = args.snapshot

    table = Table(
        title=f"journal {rows:,} snapshot rows into {args.history:,}-row history (local[2], median of {args.repeat})"
    )
    for column in (
        "run",
        "wall s",
        "rows/s",
        "peak heap MiB",
        "quality jobs",
        "inserted",
        "updated",
        "closed",
    ):
        table.add_column(column, justify="right")
    table.add_row(
        "hand-written SCD2 MERGE, no modules", f"{baseline_s:.1f}", f"{rows / baseline_s:,.0f}", f"{baseline_heap:,.0f}", "-",
        f"{baseline_counts.get('numTargetRowsInserted', 0):,} versions", "", f"{baseline_counts.get('numTargetRowsUpdated', 0):,} versions",
    )  # fmt: skip
    table.add_row(
        "thimble-etl: cleanse, validate, 12 metrics, checks, journal", f"{ours_s:.1f}", f"{rows / ours_s:,.0f}", f"{ours_heap:,.0f}",
        str(result.spark_jobs.get("quality", 0)), f"{result.inserted:,}", f"{result.updated:,}", f"{result.closed:,}",
    )  # fmt: skip
    n = len(config.quality.metrics)
    table.add_row(
        f"{n} metrics fused, one aggregation (cached input)",
        f"{fused_s:.1f}",
        "",
        "",
        str(fused_jobs),
        "",
        "",
        "",
    )
    table.add_row(
        f"{n} metrics naive, one aggregation each (cached input)",
        f"{naive_s:.1f}",
        "",
        "",
        str(naive_jobs),
        "",
        "",
        "",
    )
    console.print(table)
    ratio = ours_s / baseline_s
    console.print(f"thimble-etl / hand-written wall time: [bold]{ratio:.2f}x[/] (goal <= 1.5x)")
    console.print(
        f"quality metrics: {result.spark_jobs.get('quality', 0)} Spark job in the run; {fused_jobs} fused vs {naive_jobs} naive"
    )
    console.print(f"spark jobs per phase: {result.spark_jobs}")
    console.print(f"seconds per phase (last round): {result.phase_seconds}")
    console.print(
        f"medians of {args.repeat} round(s); load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    spark.stop()
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
