"""Journalize a snapshot into a history table with every module on, against a hand-written SCD2 MERGE.

    python packages/etl/benchmarks/bench_journal.py                     # 100k into 500k, 1M into 5M
    python packages/etl/benchmarks/bench_journal.py --sizes 100000:500000 --repeat 6
    python packages/etl/benchmarks/bench_journal.py --sizes 1000000:5000000 --remote sc://127.0.0.1:15002

Every size is measured in the same process, in interleaved rounds after a warm-up round that is not
counted: each round runs every size, and for each size both runs back to back on fresh copies of its
history, the order alternating. Both read the
same snapshot (Parquet), which has ``--changed`` of its keys changed, ``--new`` new keys, and
``--deleted`` of the current keys missing (closed by both runs). Prints, per size, the median and spread
(min-max) of the wall times and of the round-by-round ratio, rows/s, peak JVM heap, Spark jobs and
seconds per phase, and the quality metrics fused in one Spark job against one job each.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from rich.console import Console
from rich.table import Table

from thimble.common.config import load_settings
from thimble.common.spark import build_spark_session, uses_connect
from thimble.etl import RunResult, parse_table_config, run_table
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


def _build_inputs(spark: SparkSession, args: argparse.Namespace, size: Size, work: Path) -> str:
    """History table ``bench.history_<snapshot>`` and the snapshot Parquet; returns the snapshot's path."""
    s = size.snapshot
    deleted, new, changed = int(s * args.deleted), int(s * args.new), int(s * args.changed)
    current_keys = s - new + deleted
    versions = max(1, round(size.history / current_keys))
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
    spark.sql(f"DROP TABLE IF EXISTS bench.history_{s}")
    history.write.format("delta").option("delta.enableChangeDataFeed", "true").saveAsTable(
        f"bench.history_{s}"
    )

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
    path = str(work / f"snapshot_{s}")
    snapshot.repartition(4).write.mode("overwrite").parquet(path)
    return path


def _clone(spark: SparkSession, source: str, name: str, work: Path, round_: int) -> None:
    """A copy of bench.<source> (its files and log) registered as bench.<name>."""
    location = spark.sql(f"DESCRIBE DETAIL bench.{source}").first()["location"]  # type: ignore[index]
    target = work / "copies" / f"{source}-{name}-{round_}"  # a fresh path: Delta caches logs by path
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
    # SQL MERGE rather than DeltaTable: the same statement in process and over Spark Connect.
    staged.createOrReplaceTempView("bench_staged")
    spark.sql(
        """
        MERGE INTO bench.baseline AS t
        USING bench_staged AS s
        ON t.client_id = s.merge_key AND t.is_current
        WHEN MATCHED THEN UPDATE SET valid_to = current_timestamp(), is_current = false
        WHEN NOT MATCHED THEN INSERT (client_id, segment, score, city, row_hash, valid_from, valid_to, is_current)
          VALUES (s.client_id, s.segment, s.score, s.city, s.row_hash, current_timestamp(), NULL, true)
        """
    )
    metrics = spark.sql("DESCRIBE HISTORY bench.baseline LIMIT 1").first()["operationMetrics"]  # type: ignore[index]
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


@dataclass
class Size:
    """One benchmarked size: its inputs, and every round's figures."""

    snapshot: int
    history: int
    path: str = ""
    baseline_s: list[float] = field(default_factory=list)
    ours_s: list[float] = field(default_factory=list)
    baseline_heap: float = 0.0
    ours_heap: float = 0.0
    baseline_counts: dict[str, int] = field(default_factory=dict)
    result: RunResult | None = None

    @property
    def name(self) -> str:
        return f"{self.snapshot:,} into {self.history:,}"

    @property
    def ratios(self) -> list[float]:
        """thimble-etl / hand-written, round by round (each round runs both back to back)."""
        return [ours / base for ours, base in zip(self.ours_s, self.baseline_s, strict=True)]


def _sizes(text: str) -> list[Size]:
    sizes = []
    for part in text.split(","):
        snapshot, _, history = part.partition(":")
        sizes.append(Size(int(snapshot), int(history or int(snapshot) * 5)))
    return sizes


def _spread(values: list[float], unit: str = "") -> str:
    """``median (min-max)``."""
    return f"{statistics.median(values):.2f}{unit} ({min(values):.2f}-{max(values):.2f})"


def _round(spark: SparkSession, size: Size, settings: Any, work: Path, round_: int, key: str) -> None:
    """One round of one size: both runs on fresh copies of its history, in alternating order."""
    _clone(spark, f"history_{key}", "thimble", work, round_)
    _clone(spark, f"history_{key}", "baseline", work, round_)
    order = ("baseline", "thimble") if round_ % 2 == 0 else ("thimble", "baseline")
    connect = uses_connect(spark)
    for which in order:
        if not connect:
            _peak_heap_reset(spark)
        start = time.monotonic()
        if which == "baseline":
            size.baseline_counts = _baseline(spark, size.path)
            size.baseline_s.append(time.monotonic() - start)
            size.baseline_heap = 0.0 if connect else max(size.baseline_heap, _peak_heap_mib(spark))
        else:
            size.result = run_table(_config(size.path), spark=spark, settings=settings)
            size.ours_s.append(time.monotonic() - start)
            size.ours_heap = 0.0 if connect else max(size.ours_heap, _peak_heap_mib(spark))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes",
        default="100000:500000,1000000:5000000",
        help="snapshot:history row counts, comma-separated; rounds go through every size in turn",
    )
    parser.add_argument("--changed", type=float, default=0.10)
    parser.add_argument("--new", type=float, default=0.01)
    parser.add_argument("--deleted", type=float, default=0.005)
    parser.add_argument("--driver-memory", default="4g")
    parser.add_argument(
        "--repeat",
        type=int,
        default=4,
        help="rounds, rounded up to an even number so that each order runs as often (the order moves "
        "the ratio); median and spread are reported",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="rounds run first and not counted: the first runs in a fresh JVM pay its warm-up (class "
        "loading, code generation, JIT compilation)",
    )
    parser.add_argument(
        "--workdir", default=None, help="where tables are written (default: a temporary folder)"
    )
    parser.add_argument(
        "--remote",
        default=None,
        help="run over this Spark Connect server (sc://host:port) instead of Spark in this process; "
        "its peak heap and Spark job counts are not reported",
    )
    args = parser.parse_args()
    args.repeat += args.repeat % 2
    sizes = _sizes(args.sizes)

    work = Path(args.workdir or tempfile.mkdtemp(prefix="thimble-bench-etl-"))
    settings = load_settings(
        EtlSettings,
        overrides={
            "warehouse": {"location": str(work / "tables"), "landing": str(work / "landing"), "metastore": str(work / "metastore"), "database": "bench"},
            "spark": {"master": "local[2]", "driver_memory": args.driver_memory, "shuffle_partitions": 8, "remote": args.remote},
        },
    )  # fmt: skip
    spark = build_spark_session(settings, app_name="thimble-etl-bench")
    if args.remote:  # the server's metastore outlives this run: start from an empty database
        spark.sql("DROP DATABASE IF EXISTS bench CASCADE")
        build_spark_session(settings)
    where = f"Spark Connect {args.remote}" if args.remote else "local[2]"
    console = Console(width=160)
    for size in sizes:
        console.print(
            f"building {size.history:,}-row history and {size.snapshot:,}-row snapshot in {work} ..."
        )
        size.path = _build_inputs(spark, args, size, work)
    for warmup in range(args.warmup):
        for size in sizes:
            _round(spark, size, settings, work, args.repeat + warmup, str(size.snapshot))
            console.print(
                f"warm-up round, {size.name}: baseline {size.baseline_s.pop():.1f} s, "
                f"thimble-etl {size.ours_s.pop():.1f} s (not counted)"
            )
    for round_ in range(args.repeat):
        for size in sizes:
            _round(spark, size, settings, work, round_, str(size.snapshot))
            console.print(
                f"round {round_ + 1}, {size.name}: baseline {size.baseline_s[-1]:.1f} s, "
                f"thimble-etl {size.ours_s[-1]:.1f} s ({size.ratios[-1]:.2f}x)"
            )

    table = Table(
        title=f"journal runs, {where}, {args.repeat} interleaved rounds: median (min-max)", show_lines=False
    )
    for column in ("snapshot into history", "hand-written s", "thimble-etl s", "thimble / hand-written", "rows/s", "peak heap MiB (h / t)", "inserted / updated / closed"):  # fmt: skip
        table.add_column(column, justify="right")
    for size in sizes:
        result = size.result
        assert result is not None
        table.add_row(
            size.name, _spread(size.baseline_s), _spread(size.ours_s), _spread(size.ratios, "x"),
            f"{size.snapshot / statistics.median(size.ours_s):,.0f}", "-" if args.remote else f"{size.baseline_heap:,.0f} / {size.ours_heap:,.0f}",
            f"{result.inserted:,} / {result.updated:,} / {result.closed:,}",
        )  # fmt: skip
    console.print(table)
    for size in sizes:
        result = size.result
        assert result is not None
        console.print(
            f"{size.name}: hand-written MERGE inserted {size.baseline_counts.get('numTargetRowsInserted', 0):,}, "
            f"updated {size.baseline_counts.get('numTargetRowsUpdated', 0):,} versions; "
            f"thimble-etl Spark jobs per phase {result.spark_jobs}; seconds per phase (last round) {result.phase_seconds}"
        )

    if args.remote:  # job counts are not reported to a Spark Connect client
        spark.stop()
        return
    largest = max(sizes, key=lambda s: s.snapshot)
    config = _config(largest.path)
    snapshot = spark.read.parquet(largest.path).cache()
    snapshot.count()
    fused_jobs, fused_s = _metric_jobs(spark, snapshot, config, fused=True)
    naive_jobs, naive_s = _metric_jobs(spark, snapshot, config, fused=False)
    n = len(config.quality.metrics)
    console.print(
        f"{n} quality metrics of the {largest.snapshot:,}-row snapshot (cached): fused {fused_jobs} Spark job, "
        f"{fused_s:.1f} s; one aggregation each {naive_jobs} jobs, {naive_s:.1f} s"
    )
    console.print(
        f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (other work on the "
        "machine moves both runs of a round alike; the ratio is taken round by round)"
    )
    spark.stop()
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
