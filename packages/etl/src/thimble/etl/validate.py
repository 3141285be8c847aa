"""Validate: mark each row with the rules it fails; failing rows go to the quarantine table, never lost."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from thimble.etl import _sql
from thimble.etl.config import (
    AllowedValuesRule,
    JournalConfig,
    NotNullRule,
    RangeRule,
    RegexRule,
    Rule,
    SqlRule,
    TableConfig,
    UniqueRule,
)
from thimble.etl.journal import several_rows_per_key
from thimble.etl.sources import SOURCE_ERROR

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

FAILED = "_failed_rules"


def effective_rules(config: TableConfig) -> list[Rule]:
    """The configured rules plus those the write needs: keys present, and unique unless ordered."""
    return [*config.validate_, *key_rules(config.keys, config.journal)]


def key_rules(keys: Sequence[str], journal: JournalConfig | None) -> list[Rule]:
    """Keys are present, and unique in the batch unless a journal may hold several rows of a key."""
    if not keys:
        return []
    rules: list[Rule] = [NotNullRule(rule="not_null", columns=list(keys), name="keys are not null")]
    if not several_rows_per_key(journal):
        rules.append(UniqueRule(rule="unique", columns=list(keys), name="keys are unique in the batch"))
    return rules


def _violation(rule: Rule) -> Column:
    """True when a row breaks ``rule`` (never null)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if isinstance(rule, NotNullRule):
        cond = F.lit(False)
        for col in rule.columns:
            cond = cond | _sql.col(col).isNull()
        return cond
    if isinstance(rule, UniqueRule):
        window = Window.partitionBy(*[_sql.col(k) for k in rule.columns])
        return F.count(F.lit(1)).over(window) > 1
    if isinstance(rule, RangeRule):
        cond = F.lit(False)
        if rule.min is not None:
            cond = cond | (_sql.col(rule.column) < F.lit(rule.min))
        if rule.max is not None:
            cond = cond | (_sql.col(rule.column) > F.lit(rule.max))
        return F.coalesce(cond, F.lit(False))
    if isinstance(rule, AllowedValuesRule):
        return F.coalesce(~_sql.col(rule.column).isin(list(rule.values)), F.lit(False))
    if isinstance(rule, RegexRule):
        return F.coalesce(~_sql.col(rule.column).rlike(rule.pattern), F.lit(False))
    if isinstance(rule, SqlRule):
        return ~F.coalesce(F.expr(rule.condition), F.lit(False))
    raise TypeError(f"unknown rule {rule!r}")


def flag(df: DataFrame, rules: Sequence[Rule]) -> DataFrame:
    """Add ``_failed_rules`` (array of rule names, empty when the row passes); drop ``_source_error``."""
    from pyspark.sql import functions as F

    checks = [F.when(_violation(rule), F.lit(rule.rule_name())) for rule in rules]
    if SOURCE_ERROR in df.columns:
        checks.insert(0, F.col(SOURCE_ERROR))
    failed = (
        F.filter(F.array(*checks), lambda x: x.isNotNull()) if checks else F.array().cast("array<string>")
    )
    return df.withColumn(FAILED, failed).drop(SOURCE_ERROR)


def passes() -> Column:
    """Whether a flagged row failed no rule."""
    from pyspark.sql import functions as F

    return F.size(FAILED) == 0


def passing(flagged: DataFrame) -> DataFrame:
    return flagged.filter(passes()).drop(FAILED)


def quarantine_rows(flagged: DataFrame, table: str, run_id: str, at: datetime) -> DataFrame:
    """The failing rows in the quarantine table's shape: the row as JSON plus the rules it failed."""
    from pyspark.sql import functions as F

    data = [c for c in flagged.columns if c != FAILED]
    return flagged.filter(F.size(FAILED) > 0).select(
        F.lit(table).alias("table"),
        F.lit(run_id).alias("run_id"),
        F.lit(at).cast("timestamp").alias("quarantined_at"),
        F.col(FAILED).alias("failed_rules"),
        F.to_json(F.struct(*[_sql.col(c) for c in data])).alias("record"),
    )
