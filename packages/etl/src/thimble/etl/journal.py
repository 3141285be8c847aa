"""Journal (SCD type 2): every version of every key, with ``valid_from``/``valid_to``/``is_current`` and a
hash of the tracked columns.

One run is one MERGE (Delta's staged-updates recipe): each changed key contributes a row whose merge key
matches its current version (closing it) and rows with a null merge key (inserting the new versions).
Only current versions are compared; an unchanged row adds nothing.

Every journal rule lives here:

* **Ordering** (``order_by`` names the change time, a date or timestamp; a column that is a number or a
  string after cleanse is a config error, never read as seconds or a format): several versions of one key in
  a batch are applied in ``order_by`` order; consecutive identical versions collapse into one; each closes
  at the next one's ``valid_from``. Without ``order_by``, every version starts at the run's start time and
  keys must be unique in a batch.
* **Conflicts**: rows of one key with the same ``order_by`` time and different tracked values cannot be
  ordered. ``conflicts: quarantine`` (the default) quarantines all of them with :data:`CONFLICT_RULE`;
  ``conflicts: fail`` fails the run. Identical rows at the same time are one version. No version is ever
  zero-length.
* **Late rows**: a row at or before the key's last time (its current ``valid_from``; for a deleted key,
  when it was closed) is *already loaded* when a version
  of the key with the same tracked values covers its time (``valid_from <= t < valid_to``) and is
  skipped; otherwise it is *late* and goes to quarantine with :data:`LATE_RULE` (history is never
  rewritten in place; reload with ``overwrite``). So a re-run classifies every row as the first run did.
* **Deletes** (``deletes: close``): a key is deleted when the batch is a snapshot without it. Keys of
  rows that failed validation are in the snapshot (a bad value is never a deletion), and when some row's
  key is unknown (null) no key is closed in that run (known once the plan is counted:
  :meth:`JournalPlan.settle`). A deleted key closes at the **batch time**: the latest ``order_by`` value
  among the rows that passed validation (without ``order_by``: the run's start time). A key whose
  current version starts at or after the batch time is left open (the snapshot is older than that
  version); a batch with no valid row closes nothing.
* **Close guard**: a run that would close more than ``max_close_share`` of the open keys is blocked by
  the check :data:`CLOSE_GUARD` (an empty or truncated snapshot is not a mass deletion); set
  ``max_close_share: 1.0`` to allow it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from thimble.common.features import JOURNAL_COLUMNS
from thimble.etl import _sql
from thimble.etl._floats import holds_float, zero_signed
from thimble.etl.config import JournalConfig
from thimble.etl.errors import ConfigError, EtlError
from thimble.etl.quality import CheckResult, Status

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame
    from pyspark.sql.types import DataType

LATE_RULE = "journal: late arrival (at or before the key's current version)"
CONFLICT_RULE = "journal: conflicting versions (same key and order_by time, different values)"
CLOSE_GUARD = "journal: share of open keys closed"
KIND = "_kind"
CLOSE_AT = "_close_at"
REASON = "_reason"
OPEN_KINDS = ("open_new", "open_change")
REJECTED_KINDS = ("late", "conflict")
TALLY = "_tally"
OPEN_KEY = "_open_key"
UNKNOWN_KEY = "_unknown_key"
PRESENT = "_present"


def several_rows_per_key(config: JournalConfig | None) -> bool:
    """Whether a batch may hold several rows of one key: only when ``order_by`` orders them."""
    return config is not None and config.order_by is not None


def tracked_columns(columns: list[str], config: JournalConfig) -> list[str]:
    """The columns whose change opens a new version: ``track``, else every non-key column not starting with '_'."""
    if config.track:
        return list(config.track)
    return [c for c in columns if c not in config.keys and not c.startswith("_")]


def row_hash(columns: list[str], types: Mapping[str, DataType] | None = None) -> Column:
    """SHA-256 of the tracked values (JSON-encoded, so nulls and types are told apart).

    Values that compare equal hash alike, as a merge's ``<=>`` sees them: every ``float``/``double`` value
    of a column (``types``: name -> Spark type), at any depth of its structs, arrays and map values, has
    -0.0 made 0.0 (see :func:`thimble.etl._floats.zero_signed`). A column without one is hashed as it is.
    """
    from pyspark.sql import functions as F

    def value(name: str) -> Column:
        kind = (types or {}).get(name)
        column = _sql.col(name)
        return zero_signed(column, kind).alias(name) if kind is not None and holds_float(kind) else column

    return F.sha2(F.to_json(F.struct(*[value(c) for c in columns])), 256)


@dataclass
class JournalPlan:
    """The classified batch: rows to open, to close, and rejected rows (``_kind`` tells which)."""

    classified: DataFrame
    data_columns: list[str]
    config: JournalConfig
    target: DataFrame | None = None
    present: DataFrame | None = None
    """The keys of every row read (``deletes: close``): a null one means no key is known deleted."""

    @property
    def keys(self) -> list[str]:
        return list(self.config.keys)

    @property
    def target_columns(self) -> list[str]:
        return [*self.data_columns, *JOURNAL_COLUMNS]

    def staged(self) -> DataFrame:
        from pyspark.sql import functions as F

        return self.classified.filter(~F.col(KIND).isin(*REJECTED_KINDS))

    def opened(self) -> DataFrame:
        from pyspark.sql import functions as F

        return self.classified.filter(F.col(KIND).isin(*OPEN_KINDS)).select(
            *[_sql.col(c) for c in self.target_columns]
        )

    def rejected(self, failed: str) -> DataFrame:
        """Late and conflicting rows, with the journal rule each broke in the array column ``failed``."""
        from pyspark.sql import functions as F

        return self.classified.filter(F.col(KIND).isin(*REJECTED_KINDS)).select(
            *[_sql.col(c) for c in self.data_columns], F.array(F.col(REASON)).alias(failed)
        )

    def tallies(self) -> DataFrame:
        """The column :data:`TALLY`: each classified row's kind, and with ``deletes: close`` one
        :data:`OPEN_KEY` per open key of the table (for the close guard) and one :data:`UNKNOWN_KEY` per
        row read with a null key. Counted by the caller, in the same Spark job as its own tallies, and
        applied with :meth:`settle`."""
        from pyspark.sql import functions as F

        kinds = self.classified.select(F.col(KIND).alias(TALLY))
        if not self._closes_deleted_keys:
            return kinds
        assert self.target is not None
        assert self.present is not None
        open_keys = self.target.filter(F.col("is_current")).select(F.lit(OPEN_KEY).alias(TALLY))
        unknown = self.present.filter(_any_null(self.keys)).select(F.lit(UNKNOWN_KEY).alias(TALLY))
        return kinds.unionByName(open_keys).unionByName(unknown)

    def settle(self, tally: Mapping[str, int]) -> dict[str, int]:
        """The counted :meth:`tallies` as the plan applies them: when a row read has a null key, no key is
        known deleted, so the plan's closes of deleted keys are dropped (from the tally and the rows)."""
        from pyspark.sql import functions as F

        settled = dict(tally)
        if settled.pop(UNKNOWN_KEY, 0) and settled.pop("close_delete", 0):
            self.classified = self.classified.filter(F.col(KIND) != "close_delete")
        return settled

    @property
    def _closes_deleted_keys(self) -> bool:
        return self.config.deletes == "close" and self.target is not None

    def counts(self, tally: Mapping[str, int]) -> dict[str, int]:
        """Rows the plan inserts (new keys), updates (changed keys), closes (deleted keys) and rejects
        (late, conflict), from the counted :meth:`tallies`."""
        return {
            "inserted": tally.get("open_new", 0),
            "updated": tally.get("open_change", 0),
            "closed": tally.get("close_delete", 0),
            "late": tally.get("late", 0),
            "conflict": tally.get("conflict", 0),
        }

    def refuse_conflicts(self, counts: dict[str, int], table: str) -> None:
        """Under ``conflicts: fail``, raise when the batch holds conflicting versions."""
        if counts["conflict"] and self.config.conflicts == "fail":
            examples = "; ".join(self.conflicting_keys())
            raise EtlError(
                f"{table}: {counts['conflict']} rows share a key and an order_by time with different values "
                f"(e.g. key {examples}), so their order is unknown; nothing was written "
                "(journal.conflicts: fail; 'quarantine' sets them aside instead)"
            )

    def close_guard(self, tally: Mapping[str, int]) -> CheckResult | None:
        """With ``deletes: close``, the check on the share of open keys the plan closes, from the counted
        :meth:`tallies` (None: it closes none)."""
        closed = tally.get("close_delete", 0)
        if not (self._closes_deleted_keys and closed):
            return None
        return close_guard(closed, tally.get(OPEN_KEY, 0), self.config)

    def conflicting_keys(self, limit: int = 3) -> list[str]:
        """A few keys with conflicting versions, for an error message."""
        from pyspark.sql import functions as F

        rows = (
            self.classified.filter(F.col(KIND) == "conflict")
            .select(*[_sql.col(k) for k in self.keys])
            .distinct()
            .limit(limit)
            .collect()
        )
        return [", ".join(str(v) for v in row) for row in rows]


def plan(
    batch: DataFrame,
    target: DataFrame | None,
    config: JournalConfig,
    run_started: datetime,
    snapshot: DataFrame | None = None,
    *,
    table: str,
    passed: Column | None = None,
) -> JournalPlan:
    """Classify ``batch`` (the rows that passed validation) against the current versions in ``target``
    (None: the table does not exist yet) of ``table``. ``snapshot`` holds every row read, quarantined ones
    included (default: ``batch``): its keys are the ones present, whatever their values. ``passed``, when
    given, tells the rows of ``snapshot`` that make up ``batch``, so that a snapshot read for its keys is
    read once, in its own partitioning, rather than once for its rows and once for its keys."""
    from pyspark.sql import functions as F

    _refuse_unordered_time(batch, table, config.order_by)

    keys = list(config.keys)
    types = {f.name: f.dataType for f in batch.schema.fields}
    data_columns = list(types)
    started = F.lit(run_started).cast("timestamp")
    valid_from = _sql.col(config.order_by).cast("timestamp") if config.order_by else started
    b = batch.withColumns(
        {"row_hash": row_hash(tracked_columns(data_columns, config), types), "valid_from": valid_from}
    )
    present = None
    if target is None:
        joined = b.withColumns(
            {"_cur_hash": F.lit(None).cast("string"), "_cur_from": F.lit(None).cast("timestamp")}
        )
        parts = [_unordered(joined)] if config.order_by is None else _ordered(joined, None, keys)
    else:
        current = target.filter(F.col("is_current")).select(
            *[_sql.col(k) for k in keys],
            F.col("row_hash").alias("_cur_hash"),
            F.col("valid_from").alias("_cur_from"),
        )
        if config.deletes == "close":
            present = (snapshot if snapshot is not None else batch).select(*[_sql.col(k) for k in keys])
        if config.order_by is None:
            rows = b.withColumn(PRESENT, F.lit(False))
            if present is not None:
                rows = _rows_and_keys(rows, snapshot, passed, types, config, valid_from)
            parts = [_unordered_against(rows, current, keys, present is None, started)]
        else:
            joined = _with_deletion_times(b.join(current, on=keys, how="left"), target, keys)
            parts = _ordered(joined, target, keys)
            if present is not None:
                parts.append(_deletes(current, present, keys, b.agg(F.max("valid_from"))))
    classified = parts[0]
    for part in parts[1:]:
        classified = classified.unionByName(part, allowMissingColumns=True)
    is_close = F.col(KIND).startswith("close")
    classified = classified.withColumn("is_current", F.col("valid_to").isNull()).withColumns(
        {f"_mk_{i}": F.when(is_close, _sql.col(k)) for i, k in enumerate(keys)}
    )
    columns = [
        *data_columns,
        *JOURNAL_COLUMNS,
        KIND,
        CLOSE_AT,
        REASON,
        *[f"_mk_{i}" for i in range(len(keys))],
    ]
    return JournalPlan(
        classified.select(*[_sql.col(c) for c in columns]), data_columns, config, target, present
    )


def _refuse_unordered_time(df: DataFrame, table: str, order_by: str | None) -> None:
    """A journal orders versions by a date or timestamp; a number or a string (possible only when a
    ``sql`` cleanse step makes the column, whose type is known at run time alone) would be read as
    something it may not be (seconds, a format), which writes wrong history."""
    field = next((f for f in df.schema.fields if f.name == order_by), None)
    if field is None:
        return
    kind = field.dataType.simpleString()
    if not kind.startswith(("date", "timestamp")):
        raise ConfigError(
            [
                f"journal.order_by: column '{order_by}' is {kind} after cleanse; the journal needs a date "
                f"or timestamp (parse it in cleanse, e.g. sql: timestamp_millis({order_by}) for epoch "
                "milliseconds)"
            ],
            source=f"config of {table}",
        )


def _with_deletion_times(joined: DataFrame, target: DataFrame, keys: list[str]) -> DataFrame:
    """For a batch key with no current version but a closed history (a deleted key), ``_cur_from`` is
    when it was closed: a row at or before that time is already loaded or late, never a new version."""
    from pyspark.sql import functions as F

    returning = joined.filter(F.col("_cur_from").isNull()).select(*[_sql.col(k) for k in keys]).distinct()
    closed = (
        target.filter(~F.col("is_current"))
        .join(returning, on=keys, how="left_semi")
        .groupBy(*[_sql.col(k) for k in keys])
        .agg(F.max("valid_to").alias("_closed_at"))
    )
    return (
        joined.join(closed, on=keys, how="left")
        .withColumn("_cur_from", F.coalesce(F.col("_cur_from"), F.col("_closed_at")))
        .drop("_closed_at")
    )


def _unordered(joined: DataFrame) -> DataFrame:
    """Without ``order_by``, into a new table: every row opens a version at the run's start."""
    from pyspark.sql import functions as F

    return joined.withColumns(
        {
            KIND: F.lit("open_new"),
            "valid_to": F.lit(None).cast("timestamp"),
            CLOSE_AT: F.col("valid_from"),
            REASON: F.lit(None).cast("string"),
        }
    )


def _rows_and_keys(
    rows: DataFrame,
    snapshot: DataFrame | None,
    passed: Column | None,
    types: Mapping[str, DataType],
    config: JournalConfig,
    valid_from: Column,
) -> DataFrame:
    """The batch's ``rows`` (:data:`PRESENT` false) and a row of :data:`PRESENT` true for every key read:
    with ``passed``, in one pass over ``snapshot`` (a quarantined row only marks its key present).
    ``types``: the data columns (name -> Spark type)."""
    from pyspark.sql import functions as F

    assert snapshot is not None
    if passed is None:
        keys = snapshot.select(*[_sql.col(k) for k in config.keys]).withColumn(PRESENT, F.lit(True))
        return rows.unionByName(keys, allowMissingColumns=True)
    data_columns = list(types)
    hashed = F.when(passed, row_hash(tracked_columns(data_columns, config), types))
    return snapshot.select(
        *[_sql.col(c) for c in data_columns],
        hashed.alias("row_hash"),
        valid_from.alias("valid_from"),
        (~passed).alias(PRESENT),
    )


def _unordered_against(
    rows: DataFrame, current: DataFrame, keys: list[str], only_rows: bool, started: Column
) -> DataFrame:
    """Without ``order_by``, against the current versions, in one join: a key unknown or changed opens a
    version at the run's start. ``rows`` are the batch's (:data:`PRESENT` false) and, unless
    ``only_rows``, a row for each key read (:data:`PRESENT` true): a current key that no row read has is
    closed then (a deleted key), unless its version starts later."""
    from pyspark.sql import functions as F

    joined = rows.join(current, on=keys, how="left" if only_rows else "full")
    none = F.array().cast("array<string>")
    kinds = (
        F.when(
            F.col(PRESENT).isNull(),  # a current version no row read matched
            F.when(started > F.col("_cur_from"), F.array(F.lit("close_delete"))).otherwise(none),
        )
        .when(F.col(PRESENT), none)
        .when(F.col("_cur_hash").isNull(), F.array(F.lit("open_new")))
        .when(F.col("row_hash") != F.col("_cur_hash"), F.array(F.lit("close_change"), F.lit("open_change")))
        .otherwise(none)
    )
    return joined.withColumns(
        {
            KIND: F.explode(kinds),
            "valid_to": F.lit(None).cast("timestamp"),
            CLOSE_AT: started,
            REASON: F.lit(None).cast("string"),
        }
    ).drop(PRESENT)


def _ordered(joined: DataFrame, target: DataFrame | None, keys: list[str]) -> list[DataFrame]:
    """With ``order_by``: conflicts, versions after the current one (in order), late rows."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    by_key = Window.partitionBy(*[_sql.col(k) for k in keys]).orderBy("valid_from", "row_hash")
    # The rows of the key at the same time (same partitioning as by_key: one shuffle for both).
    same_time = (
        Window.partitionBy(*[_sql.col(k) for k in keys])
        .orderBy("valid_from")
        .rangeBetween(Window.currentRow, Window.currentRow)
    )
    flagged = joined.withColumn("_versions", F.size(F.collect_set("row_hash").over(same_time)))
    conflicts = flagged.filter(F.col("_versions") > 1).withColumns(
        {
            KIND: F.lit("conflict"),
            "valid_to": F.lit(None).cast("timestamp"),
            CLOSE_AT: F.lit(None).cast("timestamp"),
            REASON: F.lit(CONFLICT_RULE),
        }
    )
    ok = flagged.filter(F.col("_versions") == 1)
    after = ok.filter(F.col("_cur_from").isNull() | (F.col("valid_from") > F.col("_cur_from")))
    kept = after.withColumn("_prev", F.coalesce(F.lag("row_hash").over(by_key), F.col("_cur_hash"))).filter(
        F.col("_prev").isNull() | (F.col("row_hash") != F.col("_prev"))
    )
    kept = kept.withColumns(
        {"valid_to": F.lead("valid_from").over(by_key), "_rn": F.row_number().over(by_key)}
    )
    first = F.col("_rn") == 1
    kinds = (
        F.when(first & F.col("_cur_hash").isNull(), F.array(F.lit("open_new")))
        .when(first, F.array(F.lit("close_change"), F.lit("open_change")))
        .otherwise(F.array(F.lit("open_change")))
    )
    parts = [
        conflicts,
        kept.withColumns(
            {KIND: F.explode(kinds), CLOSE_AT: F.col("valid_from"), REASON: F.lit(None).cast("string")}
        ),
    ]
    if target is not None:
        candidates = ok.filter(F.col("_cur_from").isNotNull() & (F.col("valid_from") <= F.col("_cur_from")))
        versions = target.select(
            *[_sql.col(k).alias(f"_h_{i}") for i, k in enumerate(keys)],
            F.col("valid_from").alias("_h_from"),
            F.col("valid_to").alias("_h_to"),
            F.col("row_hash").alias("_h_hash"),
        )
        covered = [candidates[_sql.quote(k)] == versions[f"_h_{i}"] for i, k in enumerate(keys)] + [
            candidates["row_hash"] == versions["_h_hash"],
            candidates["valid_from"] >= versions["_h_from"],
            versions["_h_to"].isNull() | (candidates["valid_from"] < versions["_h_to"]),
        ]
        late = candidates.join(versions, covered, "left_anti")
        parts.append(
            late.withColumns(
                {
                    KIND: F.lit("late"),
                    "valid_to": F.lit(None).cast("timestamp"),
                    CLOSE_AT: F.lit(None).cast("timestamp"),
                    REASON: F.lit(LATE_RULE),
                }
            )
        )
    return [part.drop("_versions", "_prev", "_rn") for part in parts]


def _deletes(current: DataFrame, present: DataFrame, keys: list[str], batch_time: DataFrame) -> DataFrame:
    """With ``order_by``: the current versions of the keys absent from ``present`` (the keys of every row
    read), closed at the batch time (``batch_time``: one row, the latest ``valid_from`` of the batch)."""
    from pyspark.sql import functions as F

    close_at = F.col("_batch_time")
    absent = current.join(present.filter(~_any_null(keys)).distinct(), on=keys, how="left_anti")
    return (
        absent.crossJoin(batch_time.toDF("_batch_time"))
        .filter(close_at.isNotNull() & (close_at > F.col("_cur_from")))
        .withColumns(
            {
                KIND: F.lit("close_delete"),
                "valid_to": F.lit(None).cast("timestamp"),
                CLOSE_AT: close_at,
                REASON: F.lit(None).cast("string"),
            }
        )
        .drop("_batch_time")
    )


def _any_null(keys: list[str]) -> Column:
    """Whether any of ``keys`` is null."""
    from pyspark.sql import functions as F

    any_null = F.lit(False)
    for k in keys:
        any_null = any_null | _sql.col(k).isNull()
    return any_null


def close_guard(closed: int, open_keys: int, config: JournalConfig) -> CheckResult:
    """The check that blocks a run closing more than ``max_close_share`` of the open keys."""
    share = closed / open_keys if open_keys else 0.0
    limit = config.max_close_share
    detail = f"closes {closed:,} of {open_keys:,} open keys ({share:.0%})"
    status: Status = "pass"
    if share > limit:
        status = "fail"
        detail += (
            f", more than journal.max_close_share {limit:g}: an empty or partial snapshot? "
            "Set journal.max_close_share: 1.0 to allow it"
        )
    return CheckResult(f"{CLOSE_GUARD} <= {limit:g}", CLOSE_GUARD, "fail", status, share, detail)


def merge_statement(plan_: JournalPlan, table: str, staged: str) -> str:
    """The one MERGE that applies the plan to ``table`` (a quoted name) in one Delta commit, reading
    :meth:`JournalPlan.staged` from the view ``staged``: a staged row matching a current version closes it,
    a new version is inserted."""
    on = " AND ".join(
        [f"t.{_sql.quote(k)} = s._mk_{i}" for i, k in enumerate(plan_.keys)] + ["t.is_current = true"]
    )
    columns = ", ".join(_sql.quote(c) for c in plan_.target_columns)
    values = ", ".join(f"s.{_sql.quote(c)}" for c in plan_.target_columns)
    kinds = ", ".join(f"'{kind}'" for kind in OPEN_KINDS)
    return (
        f"MERGE INTO {table} t USING {staged} s ON {on} "
        f"WHEN MATCHED THEN UPDATE SET valid_to = s.{CLOSE_AT}, is_current = false "
        f"WHEN NOT MATCHED AND s.{KIND} IN ({kinds}) THEN INSERT ({columns}) VALUES ({values})"
    )
