"""Point-in-time training set benchmark: ``training_set`` vs the hand-written as-of join in PySpark.

    .venv/bin/python packages/modelops/benchmarks/bench_training_set.py [--labels 100000] [--journal 1000000] [--rounds 3]

A journal of ``--journal`` rows (``--versions`` per client, one client in 20 deleted: its last version
closed) with the columns thimble-etl's journal writes, and a Delta table of ``--labels`` label rows at
random times (one in 50 of a client the journal never saw). Both sides read the same tables and write
every row of the training set to Spark's ``noop`` sink:

* hand-written: the range join a careful engineer writes, on the entity and the validity columns
  (``valid_from <= t < valid_to``, ``valid_to`` null while open), the journal read at a pinned version;
* thimble: ``training_set(labels_table, feature_set, at=...)``, which also pins both tables' versions and
  checks their columns.

Both results are checked equal first. Rounds alternate which side goes first; the median and spread
(min-max) of both times and of the round-by-round ratio are printed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

HERE = Path(__file__).resolve().parent
os.environ.setdefault("THIMBLE_RUN_DIR", str(HERE.parents[2] / ".run"))

START = "2026-01-01 00:00:00"
STEP_MINUTES = 1000  # between a client's versions
FEATURES = ("segment", "score", "orders", "spend")


class ClientFeatures(BaseModel):
    client_id: str
    event_time: datetime
    segment: str
    score: float
    orders: int
    spend: float


def write_journal(spark: SparkSession, table: str, rows: int, versions: int) -> None:
    """``rows`` journal rows: client ``c`` has ``versions`` versions, each valid until the next one; the
    last is open, except for one client in 20, whose last version was closed (the client deleted)."""
    from pyspark.sql import functions as F

    from thimble.common.features import JOURNAL_COLUMNS

    clients = rows // versions
    client = F.col("id") % clients  # a client's versions are spread over the table's files
    index = F.floor(F.col("id") / clients)
    start = F.unix_timestamp(F.to_timestamp(F.lit(START)))
    offset = index * STEP_MINUTES + client % 997  # clients' versions start at different minutes
    valid_from = F.timestamp_seconds(start + offset * 60)
    following = F.timestamp_seconds(start + (offset + STEP_MINUTES) * 60)
    closed = F.timestamp_seconds(start + (offset + STEP_MINUTES // 2) * 60)
    last = index == versions - 1
    valid_to = F.when(~last, following).when(client % 20 == 0, closed)
    journal = spark.range(rows, numPartitions=4).select(
        F.format_string("c%07d", client).alias("client_id"),
        valid_from.alias("event_time"),
        F.element_at(
            F.array(F.lit("bronze"), F.lit("silver"), F.lit("gold")), (F.col("id") % 3 + 1).cast("int")
        ).alias("segment"),
        F.rand(1).alias("score"),
        (F.col("id") % 40).alias("orders"),
        (F.rand(2) * 500).alias("spend"),
        F.sha2(F.col("id").cast("string"), 256).alias("row_hash"),
        valid_from.alias("valid_from"),
        valid_to.alias("valid_to"),
        valid_to.isNull().alias("is_current"),
    )
    assert journal.columns[-len(JOURNAL_COLUMNS) :] == list(JOURNAL_COLUMNS)
    journal.write.format("delta").saveAsTable(table)


def write_labels(spark: SparkSession, table: str, rows: int, clients: int, versions: int) -> None:
    """``rows`` labels at random times over the journal's span (and a little before and after it)."""
    from pyspark.sql import functions as F

    span = (versions + 1) * STEP_MINUTES * 60
    start = F.unix_timestamp(F.to_timestamp(F.lit(START)))
    client = (F.rand(3) * clients).cast("long")
    spark.range(rows, numPartitions=2).select(
        F.col("id").alias("label_id"),
        F.when(F.col("id") % 50 == 0, F.format_string("x%07d", client))
        .otherwise(F.format_string("c%07d", client))
        .alias("client_id"),
        F.timestamp_seconds(start - 3600 + (F.rand(4) * span).cast("long")).alias("label_time"),
        (F.rand(5) < 0.2).alias("churned"),
    ).write.format("delta").saveAsTable(table)


def hand_written(spark: SparkSession, labels: str, journal: str, version: int) -> DataFrame:
    """The as-of join written by hand: a range join on the client and the validity columns."""
    from pyspark.sql import functions as F

    j = spark.read.format("delta").option("versionAsOf", version).table(journal)
    j = j.select(F.col("client_id").alias("j_client"), "valid_from", "valid_to", *FEATURES)
    lab = spark.table(labels)
    valid_at = (
        (lab["client_id"] == j["j_client"])
        & (j["valid_from"] <= lab["label_time"])
        & (j["valid_to"].isNull() | (lab["label_time"] < j["valid_to"]))
    )
    return lab.join(j, valid_at, "left").drop("j_client", "valid_from", "valid_to")


def _spread(values: list[float], unit: str = "") -> str:
    """``median (min-max)``."""
    return f"{statistics.median(values):.2f}{unit} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--labels", type=int, default=100_000)
    parser.add_argument("--journal", type=int, default=1_000_000, help="journal rows")
    parser.add_argument("--versions", type=int, default=10, help="versions per client")
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds; median and spread reported"
    )
    parser.add_argument("--partitions", type=int, default=4, help="spark.sql.shuffle.partitions")
    args = parser.parse_args()

    from thimble.common.features import FeatureSet
    from thimble.common.spark import build_spark_session
    from thimble.etl import table_version
    from thimble.modelops import training_set
    from thimble.modelops.config import load_modelops_settings

    work = Path(tempfile.mkdtemp(prefix="thimble-bench-training-set-"))
    settings = load_modelops_settings(
        overrides={
            "warehouse": {
                "location": str(work / "tables"),
                "landing": str(work / "landing"),
                "metastore": str(work / "metastore"),
                "database": "bench",
            },
            "spark": {"shuffle_partitions": args.partitions, "driver_memory": "2g"},
        }
    )
    spark = build_spark_session(settings, app_name="thimble-bench-training-set")
    features = FeatureSet("client-features", ClientFeatures, entity_key="client_id", event_time="event_time")
    journal, labels = features.journal_table("bench"), "bench.labels"
    started = time.perf_counter()
    write_journal(spark, journal, args.journal, args.versions)
    write_labels(spark, labels, args.labels, args.journal // args.versions, args.versions)
    version = table_version(journal, spark=spark, settings=settings)
    print(f"tables written in {time.perf_counter() - started:.1f} s ({work})")

    def ours() -> DataFrame:
        return training_set(labels, features, at="label_time", spark=spark, settings=settings).df

    def theirs() -> DataFrame:
        return hand_written(spark, labels, journal, version)

    # Same rows both ways (and a warm-up of both).
    a, b = ours(), theirs().select(*ours().columns)
    if a.exceptAll(b).count() or b.exceptAll(a).count():
        raise SystemExit("the two joins differ")
    matched = a.filter("segment is not null").count()
    print(f"{args.labels:,} labels, {matched:,} with features ({matched / args.labels:.0%})")

    jobs: dict[str, Callable[[], DataFrame]] = {"hand-written": theirs, "thimble": ours}
    times: dict[str, list[float]] = {name: [] for name in jobs}
    for round_ in range(args.rounds):
        for name in list(jobs)[:: 1 if round_ % 2 == 0 else -1]:
            start = time.perf_counter()
            jobs[name]().write.format("noop").mode("overwrite").save()
            times[name].append(time.perf_counter() - start)
    spark.stop()
    shutil.rmtree(work, ignore_errors=True)

    ratios = [o / h for o, h in zip(times["thimble"], times["hand-written"], strict=True)]
    print(
        f"\nPoint-in-time training set: {args.labels:,} labels over a {args.journal:,}-row journal "
        f"({args.versions} versions per client), local[2], {args.rounds} interleaved rounds: median (min-max)"
    )
    print(f"  hand-written as-of join   {_spread(times['hand-written'], ' s')}")
    print(f"  thimble training_set      {_spread(times['thimble'], ' s')}")
    print(f"  ratio thimble/hand        {_spread(ratios, 'x')}   (goal <= 1.2x)")
    pairs = zip(times["hand-written"], times["thimble"], strict=True)
    print(f"  rounds (hand/thimble s)   {', '.join(f'{h:.2f}/{o:.2f}' for h, o in pairs)}")


if __name__ == "__main__":
    main()
