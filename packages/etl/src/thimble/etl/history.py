"""What a table holds over time: its versions (with run ids, counts and check results) and its changes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from thimble.common.config import ThimbleSettings, load_settings
from thimble.common.spark import as_utc
from thimble.etl import _tables
from thimble.etl.config import EtlSettings
from thimble.etl.errors import TableNotFoundError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

CDF_COLUMNS = (("_change_type", "string"), ("_commit_version", "bigint"), ("_commit_timestamp", "timestamp"))


@dataclass(frozen=True)
class TableVersion:
    """One commit of a table."""

    version: int
    timestamp: datetime
    operation: str
    run_id: str | None
    config_hash: str | None
    rows_written: int | None
    """Delta's ``numOutputRows``: rows in the files the commit wrote, unchanged rows it copied included."""
    inserted: int | None
    updated: int | None
    closed: int | None
    checks: dict[str, int] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    """What the writer's caller recorded (``write_dataframe(metadata=...)``)."""
    source: dict[str, Any] = field(default_factory=dict)
    """What the run read: landed ``files`` and the ``kafka_offsets`` in them, or a topic's ``kafka`` ends."""

    @property
    def rows_changed(self) -> int | None:
        """Rows the run inserted, updated or closed (``None`` when the commit does not say)."""
        counts = [n for n in (self.inserted, self.updated, self.closed) if n is not None]
        return sum(counts) if counts else None

    def checks_text(self) -> str:
        """``2 pass, 1 warn, 0 fail`` (empty when the run had no checks)."""
        if not self.checks:
            return ""
        return ", ".join(f"{self.checks.get(status, 0)} {status}" for status in ("pass", "warn", "fail"))

    def cells(self) -> list[str]:
        """The version as one row of text cells, in the order of :data:`VERSION_COLUMNS`."""
        counts = (self.rows_changed, self.inserted, self.updated, self.closed)
        return [
            str(self.version),
            f"{self.timestamp:%Y-%m-%d %H:%M:%S}",
            self.operation,
            self.run_id or "",
            *("" if n is None else f"{n:,}" for n in counts),
            self.checks_text(),
        ]


VERSION_COLUMNS = (
    "version",
    "time (UTC)",
    "operation",
    "run id",
    "rows changed",
    "inserted",
    "updated",
    "closed",
    "checks",
)
"""The headings of :meth:`TableVersion.cells`, as ``history`` and the report show them."""


def _resolve(
    table: str, spark: SparkSession | None, settings: ThimbleSettings | None, function: str
) -> tuple[SparkSession, str]:
    """The session (built when None) and the qualified name of the ``table`` given to ``function``,
    which must exist."""
    settings = settings if settings is not None else load_settings(EtlSettings)
    name = _tables.argument(table, settings, function)
    if spark is None:
        from thimble.common.spark import build_spark_session

        spark = build_spark_session(settings, app_name="thimble-etl")
    _tables.require(spark, name)
    return spark, name


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def history(
    table: str, spark: SparkSession | None = None, settings: ThimbleSettings | None = None
) -> list[TableVersion]:
    """Every version still in the table's log, newest first (times in UTC)."""
    spark, name = _resolve(table, spark, settings, "history")
    out = []
    for commit in _tables.commits(spark, name):
        meta = commit["thimble"]
        counts = meta.get("counts", {})
        metrics = commit["metrics"]
        inserted = counts.get("inserted", _int(metrics.get("numTargetRowsInserted")))
        if "inserted" not in counts and meta.get("mode") in ("append", "overwrite"):
            # A one-pass write knows its row count only once committed: Delta's count is the one.
            inserted = _int(metrics.get("numOutputRows"))
        updated = counts.get("updated", _int(metrics.get("numTargetRowsUpdated")))
        if meta.get("mode") == "merge":
            inserted, updated = (
                _int(metrics.get("numTargetRowsInserted")),
                _int(metrics.get("numTargetRowsUpdated")),
            )
        out.append(
            TableVersion(
                version=commit["version"],
                timestamp=as_utc(commit["timestamp"]),
                operation=commit["operation"],
                run_id=meta.get("run_id"),
                config_hash=meta.get("config_hash"),
                rows_written=_int(metrics.get("numOutputRows")),
                inserted=_int(inserted),
                updated=_int(updated),
                closed=_int(counts.get("closed")),
                checks=dict(meta.get("checks", {})),
                metadata=dict(meta.get("metadata") or {}),
                source=dict(meta.get("source") or {}),
            )
        )
    return out


def loaded_offsets(versions: list[TableVersion], version: int) -> dict[str, dict[int, int]]:
    """The highest Kafka offset per topic and partition whose data the table holds at ``version``.

    From what each run recorded up to ``version`` (:func:`history`'s entries): the offsets in the landed
    files a run loaded, or the end offsets a Kafka source read up to. Empty when no run recorded any
    (a table source, a DataFrame, or versions older than the table's log).
    """
    out: dict[str, dict[int, int]] = {}

    def keep(topic: Any, partition: Any, offset: Any) -> None:
        p, o = _int(partition), _int(offset)
        if isinstance(topic, str) and p is not None and o is not None and o >= 0:
            partitions = out.setdefault(topic, {})
            partitions[p] = max(o, partitions.get(p, -1))

    for entry in versions:
        if entry.version > version:
            continue
        for topic, partitions in (entry.source.get("kafka_offsets") or {}).items():
            for partition, offset in (partitions or {}).items():
                keep(topic, partition, offset)
        kafka = entry.source.get("kafka") or {}
        for partition, end in (kafka.get("offsets") or {}).items():
            keep(kafka.get("topic"), partition, (_int(end) or 0) - 1)  # an end is the next offset to read
    return out


def blocked_runs(
    table: str, spark: SparkSession | None = None, settings: ThimbleSettings | None = None
) -> list[tuple[str, datetime, int | None, str]]:
    """Runs a failing check blocked: (run id, time, table version kept, failed checks), newest first."""
    from pyspark.sql import functions as F

    settings = settings if settings is not None else load_settings(EtlSettings)
    spark, name = _resolve(table, spark, settings, "blocked_runs")
    etl = getattr(settings, "etl", None)
    metrics_table = _tables.qualified(etl.metrics_table if etl is not None else "thimble_quality", settings)
    if not _tables.exists(spark, metrics_table):
        return []
    # The failed checks are few: grouped here rather than by a Spark shuffle and sort.
    rows = (
        spark.table(metrics_table)
        .filter(
            (F.col("table") == name)
            & (F.col("kind") == "check")
            & (F.col("status") == "fail")
            & ~F.col("committed")
        )
        .select("run_id", "run_at", "version", F.concat_ws(": ", "name", "detail").alias("failed"))
        .collect()
    )
    runs: dict[tuple[str, datetime, int | None], list[str]] = {}
    for r in rows:
        runs.setdefault((r.run_id, r.run_at, r.version), []).append(r.failed)
    return [
        (run_id, as_utc(at), version, "; ".join(sorted(failed)))
        for (run_id, at, version), failed in sorted(runs.items(), key=lambda run: run[0][1], reverse=True)
    ]


def table_version(
    table: str, spark: SparkSession | None = None, settings: ThimbleSettings | None = None
) -> int:
    """The table's current version."""
    settings = settings if settings is not None else load_settings(EtlSettings)
    if spark is None:
        spark, name = _resolve(table, spark, settings, "table_version")
    else:
        name = _tables.argument(table, settings, "table_version")
    version = _tables.version(spark, name)
    if version is None:
        raise TableNotFoundError(f"no table '{name}' in the warehouse")
    return version


def changes(
    table: str, since_version: int, spark: SparkSession | None = None, settings: ThimbleSettings | None = None
) -> DataFrame:
    """Rows changed after ``since_version`` (exclusive), from Delta's change data feed.

    Columns: the table's, plus ``_change_type`` (insert, update_preimage, update_postimage, delete),
    ``_commit_version`` and ``_commit_timestamp``. Empty when nothing changed since.
    """
    spark, name = _resolve(table, spark, settings, "changes")
    current = _tables.version(spark, name)
    assert current is not None
    if since_version >= current:
        from pyspark.sql import functions as F

        cdf = [F.lit(None).cast(kind).alias(column) for column, kind in CDF_COLUMNS]
        return spark.table(name).limit(0).select("*", *cdf)
    return (
        spark.read.format("delta")
        .option("readChangeFeed", "true")
        .option("startingVersion", max(since_version + 1, 0))
        .table(name)
    )


def change_totals(changes_df: DataFrame) -> dict[str, int]:
    """Rows per change type of a :func:`changes` frame (one Spark job), every type present.

    For a journal, ``insert`` rows are new versions and ``update_postimage`` rows versions closed.
    """
    from pyspark.sql import functions as F

    counts = {
        r["_change_type"]: int(r["n"])
        for r in changes_df.groupBy("_change_type").agg(F.count(F.lit(1)).alias("n")).collect()
    }
    kinds = ("insert", "update_preimage", "update_postimage", "delete")
    return {kind: counts.get(kind, 0) for kind in kinds} | {k: v for k, v in counts.items() if k not in kinds}
