"""What a table's runs set aside: the rows of its quarantine table, why, and how many per rule."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from thimble.common.config import ThimbleSettings, load_settings
from thimble.etl import _tables
from thimble.etl.config import EtlSettings

if TYPE_CHECKING:
    from pyspark.sql import Column, SparkSession

SOURCE_PREFIX = "source: "


@dataclass(frozen=True)
class RuleCount:
    """Rows that failed one rule (a row failing two rules counts for both)."""

    rule: str
    rows: int
    runs: int
    last_at: datetime


@dataclass(frozen=True)
class QuarantinedRow:
    run_id: str
    quarantined_at: datetime
    failed_rules: list[str]
    record: str


@dataclass(frozen=True)
class QuarantineSummary:
    """The quarantine of ``table``: totals, counts per rule, and the latest rows."""

    table: str
    quarantine_table: str
    rows: int
    runs: int
    rules: list[RuleCount]
    latest: list[QuarantinedRow]


def rule_of(reason: Column) -> Column:
    """The rule a reason names: a source error without the raw text it quotes (``source: ...: {raw}``)."""
    from pyspark.sql import functions as F

    source_rule = F.regexp_extract(reason, r"^(source: .*?): ", 1)
    return F.when(reason.startswith(SOURCE_PREFIX) & (source_rule != ""), source_rule).otherwise(reason)


def quarantine_summary(
    table: str,
    spark: SparkSession | None = None,
    settings: ThimbleSettings | None = None,
    run_id: str | None = None,
    limit: int = 20,
) -> QuarantineSummary:
    """Counts per rule and the ``limit`` latest rows of ``table``'s quarantine (one run: ``run_id``)."""
    from pyspark.sql import functions as F

    settings = settings if settings is not None else load_settings(EtlSettings)
    name = _tables.argument(table, settings, "quarantine_summary")
    if spark is None:
        from thimble.common.spark import build_spark_session

        spark = build_spark_session(settings, app_name="thimble-etl")
    _tables.require(spark, name)
    etl = getattr(settings, "etl", None)
    quarantine_table = f"{name}{etl.quarantine_suffix if etl is not None else '_quarantine'}"
    if not _tables.exists(spark, quarantine_table):
        return QuarantineSummary(name, quarantine_table, 0, 0, [], [])
    rows = spark.table(quarantine_table)
    if run_id is not None:
        rows = rows.filter(F.col("run_id") == run_id)
    totals = rows.agg(F.count(F.lit(1)), F.countDistinct("run_id")).first()
    assert totals is not None
    per_rule = (
        rows.select("run_id", "quarantined_at", F.explode("failed_rules").alias("reason"))
        .groupBy(rule_of(F.col("reason")).alias("rule"))
        .agg(
            F.count(F.lit(1)).alias("rows"),
            F.countDistinct("run_id").alias("runs"),
            F.max("quarantined_at").alias("last_at"),
        )
        .orderBy(F.col("rows").desc(), "rule")
        .collect()
    )
    latest = rows.orderBy(F.col("quarantined_at").desc(), "run_id").limit(limit).collect()
    return QuarantineSummary(
        table=name,
        quarantine_table=quarantine_table,
        rows=int(totals[0]),
        runs=int(totals[1]),
        rules=[RuleCount(r.rule, int(r.rows), int(r.runs), r.last_at) for r in per_rule],
        latest=[QuarantinedRow(r.run_id, r.quarantined_at, list(r.failed_rules), r.record) for r in latest],
    )
