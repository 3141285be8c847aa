"""Journal (SCD type 2): every version of every key, with ``valid_from``/``valid_to``/``is_current`` and a
hash of the tracked columns.

One run is one MERGE (Delta's staged-updates recipe): each changed key contributes a row whose merge key
matches its current version (closing it) and rows with a null merge key (inserting the new versions).
Only current versions are compared; an unchanged row adds nothing.

Ordering and late data, when ``order_by`` names the change time:

* several versions of one key in a batch are applied in ``order_by`` order; consecutive identical
  versions collapse into one; each closes at the next one's ``valid_from``;
* a row at or before the key's current ``valid_from`` is *already loaded* when the journal holds that
  exact version (same time and hash) and is skipped, otherwise it is *late* and goes to quarantine with
  the rule ``journal: late arrival`` (history is never rewritten in place; reload with ``overwrite``);
* without ``order_by``, every version starts at the run's start time and keys must be unique in a batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from thimble.etl.config import JOURNAL_COLUMNS, JournalConfig

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

LATE_RULE = "journal: late arrival (at or before the key's current version)"
KIND = "_kind"
CLOSE_AT = "_close_at"
OPEN_KINDS = ("open_new", "open_change")


def _c(name: str) -> Column:
    from pyspark.sql import functions as F

    return F.col(f"`{name}`")


def tracked_columns(columns: list[str], config: JournalConfig) -> list[str]:
    """The columns whose change opens a new version: ``track``, else every non-key column not starting with '_'."""
    if config.track:
        return list(config.track)
    return [c for c in columns if c not in config.keys and not c.startswith("_")]


def row_hash(columns: list[str]) -> Column:
    """SHA-256 of the tracked values (JSON-encoded, so nulls and types are told apart)."""
    from pyspark.sql import functions as F

    return F.sha2(F.to_json(F.struct(*[_c(c) for c in columns])), 256)


@dataclass
class JournalPlan:
    """The classified batch: rows to open, to close, and late rows (``_kind`` tells which)."""

    classified: DataFrame
    data_columns: list[str]
    keys: list[str]

    @property
    def target_columns(self) -> list[str]:
        return [*self.data_columns, *JOURNAL_COLUMNS]

    def staged(self) -> DataFrame:
        from pyspark.sql import functions as F

        return self.classified.filter(F.col(KIND) != "late")

    def opened(self) -> DataFrame:
        from pyspark.sql import functions as F

        return self.classified.filter(F.col(KIND).isin(*OPEN_KINDS)).select(
            *[_c(c) for c in self.target_columns]
        )

    def late(self) -> DataFrame:
        from pyspark.sql import functions as F

        return self.classified.filter(F.col(KIND) == "late").select(*[_c(c) for c in self.data_columns])


def plan(
    batch: DataFrame, target: DataFrame | None, config: JournalConfig, run_started: datetime
) -> JournalPlan:
    """Classify ``batch`` against the current versions in ``target`` (None: the table does not exist yet)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    keys = list(config.keys)
    data_columns = list(batch.columns)
    started = F.lit(run_started).cast("timestamp")
    valid_from = _c(config.order_by).cast("timestamp") if config.order_by else started
    b = batch.withColumns(
        {
            "row_hash": row_hash(tracked_columns(data_columns, config)),
            "valid_from": valid_from,
            "_in_batch": F.lit(True),
        }
    )
    if target is None:
        joined = b.withColumns(
            {"_cur_hash": F.lit(None).cast("string"), "_cur_from": F.lit(None).cast("timestamp")}
        )
    else:
        current = target.filter(F.col("is_current")).select(
            *[_c(k) for k in keys],
            F.col("row_hash").alias("_cur_hash"),
            F.col("valid_from").alias("_cur_from"),
        )
        joined = b.join(current, on=keys, how="full" if config.deletes == "close" else "left")

    in_batch = F.col("_in_batch").isNotNull()
    parts: list[DataFrame] = []
    if config.order_by is None:
        kinds = (
            F.when(F.col("_cur_hash").isNull(), F.array(F.lit("open_new")))
            .when(
                F.col("row_hash") != F.col("_cur_hash"), F.array(F.lit("close_change"), F.lit("open_change"))
            )
            .otherwise(F.array().cast("array<string>"))
        )
        parts.append(
            joined.filter(in_batch).withColumns(
                {
                    KIND: F.explode(kinds),
                    "valid_to": F.lit(None).cast("timestamp"),
                    CLOSE_AT: F.col("valid_from"),
                }
            )
        )
    else:
        eligible = joined.filter(
            in_batch & (F.col("_cur_from").isNull() | (F.col("valid_from") > F.col("_cur_from")))
        )
        by_key = Window.partitionBy(*[_c(k) for k in keys]).orderBy("valid_from", "row_hash")
        kept = eligible.withColumn(
            "_prev", F.coalesce(F.lag("row_hash").over(by_key), F.col("_cur_hash"))
        ).filter(F.col("_prev").isNull() | (F.col("row_hash") != F.col("_prev")))
        kept = kept.withColumns(
            {"valid_to": F.lead("valid_from").over(by_key), "_rn": F.row_number().over(by_key)}
        )
        first = F.col("_rn") == 1
        kinds = (
            F.when(first & F.col("_cur_hash").isNull(), F.array(F.lit("open_new")))
            .when(first, F.array(F.lit("close_change"), F.lit("open_change")))
            .otherwise(F.array(F.lit("open_change")))
        )
        parts.append(
            kept.withColumns({KIND: F.explode(kinds), CLOSE_AT: F.col("valid_from")}).drop("_prev", "_rn")
        )
        candidates = joined.filter(
            in_batch & F.col("_cur_from").isNotNull() & (F.col("valid_from") <= F.col("_cur_from"))
        )
        if target is not None:
            loaded = target.select(
                *[_c(k) for k in keys],
                F.col("valid_from").alias("_h_from"),
                F.col("row_hash").alias("_h_hash"),
                F.lit(True).alias("_loaded"),
            )
            cond = [candidates[k] == loaded[k] for k in keys]
            cond += [
                candidates["valid_from"] == loaded["_h_from"],
                candidates["row_hash"] == loaded["_h_hash"],
            ]
            late = candidates.join(loaded, cond, "left_anti")
            parts.append(
                late.withColumns(
                    {
                        KIND: F.lit("late"),
                        "valid_to": F.lit(None).cast("timestamp"),
                        CLOSE_AT: F.lit(None).cast("timestamp"),
                    }
                )
            )
    if target is not None and config.deletes == "close":
        parts.append(
            joined.filter(~in_batch).withColumns(
                {KIND: F.lit("close_delete"), "valid_to": F.lit(None).cast("timestamp"), CLOSE_AT: started}
            )
        )
    classified = parts[0]
    for part in parts[1:]:
        classified = classified.unionByName(part)
    is_close = F.col(KIND).startswith("close")
    classified = classified.withColumn("is_current", F.col("valid_to").isNull()).withColumns(
        {f"_mk_{i}": F.when(is_close, _c(k)) for i, k in enumerate(keys)}
    )
    columns = [*data_columns, *JOURNAL_COLUMNS, KIND, CLOSE_AT, *[f"_mk_{i}" for i in range(len(keys))]]
    return JournalPlan(classified.select(*[_c(c) for c in columns]), data_columns, keys)


def merge(plan_: JournalPlan, table: str) -> None:
    """Apply the plan to ``table`` in one MERGE (one Delta commit)."""
    from delta.tables import DeltaTable

    spark = plan_.classified.sparkSession
    cond = " AND ".join(
        [f"t.`{k}` = s.`_mk_{i}`" for i, k in enumerate(plan_.keys)] + ["t.is_current = true"]
    )
    (
        DeltaTable.forName(spark, table)
        .alias("t")
        .merge(plan_.staged().alias("s"), cond)
        .whenMatchedUpdate(set={"valid_to": f"s.{CLOSE_AT}", "is_current": "false"})
        .whenNotMatchedInsert(
            condition=f"s.{KIND} IN ('open_new', 'open_change')",
            values={f"`{c}`": f"s.`{c}`" for c in plan_.target_columns},
        )
        .execute()
    )
