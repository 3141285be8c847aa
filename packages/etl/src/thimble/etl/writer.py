"""Write a batch into its Delta table in ONE commit: append, overwrite (partition-scoped), merge or journal."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from thimble.common.features import JOURNAL_COLUMNS
from thimble.etl import _tables, journal
from thimble.etl._sql import quote, quote_table
from thimble.etl.config import JournalConfig
from thimble.etl.errors import SchemaMismatchError

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

WriteMode = Literal["append", "overwrite", "merge", "journal"]


@dataclass(frozen=True)
class WriteSpec:
    """How a batch reaches its table."""

    mode: WriteMode = "append"
    keys: tuple[str, ...] = ()
    partition_by: tuple[str, ...] = ()
    journal: JournalConfig | None = None
    evolution: Literal["fail", "allow_new_columns"] = "fail"
    overwrite_schema: bool = False
    allow_missing_columns: bool = False


@dataclass
class Prepared:
    """A batch ready to write: the rows, or the journal plan."""

    df: DataFrame
    plan: journal.JournalPlan | None = None


def check_schema(
    spark: SparkSession, df: DataFrame, table: str, spec: WriteSpec, *, exists: bool
) -> list[str]:
    """New columns of ``df`` against the table (``exists``: whether it does); raise when the policy forbids
    a change."""
    if spec.overwrite_schema or not exists:
        return []
    existing = _column_types(spark, table)
    _missing_columns(df, table, spec, existing)
    new = [name for name in df.columns if name not in existing]
    if new and spec.evolution == "fail":
        raise SchemaMismatchError(
            f"{table}: the data has new column(s) {', '.join(new)}; the table's schema is frozen "
            "(schema.evolution: fail). Set schema.evolution: allow_new_columns to add them, or drop them in cleanse."
        )
    return new


def missing_columns(
    spark: SparkSession, df: DataFrame, table: str, spec: WriteSpec, *, exists: bool
) -> dict[str, str]:
    """The columns of the table (``exists``: whether it does) that ``df`` lacks (name -> type); raise unless
    ``allow_missing_columns``.

    A column that disappears from the source is a schema change, never a column of nulls. Columns whose
    type changed are refused first.
    """
    if spec.overwrite_schema or not exists:
        return {}
    return _missing_columns(df, table, spec, _column_types(spark, table))


def _column_types(spark: SparkSession, table: str) -> dict[str, str]:
    """The table's columns (name -> type), in order."""
    return {f.name: f.dataType.simpleString() for f in spark.table(table).schema.fields}


def _missing_columns(df: DataFrame, table: str, spec: WriteSpec, existing: dict[str, str]) -> dict[str, str]:
    changed = [
        f"'{f.name}' is {kind} in the data but {existing[f.name]} in the table"
        for f in df.schema.fields
        if f.name in existing and existing[f.name] != (kind := f.dataType.simpleString()) and kind != "void"
    ]
    if changed:
        raise SchemaMismatchError(
            f"{table}: column types changed: {'; '.join(changed)}. Cast them in cleanse."
        )
    journal_columns = JOURNAL_COLUMNS if spec.mode == "journal" else ()
    missing = {
        name: kind
        for name, kind in existing.items()
        if name not in df.columns and name not in journal_columns
    }
    if missing and not spec.allow_missing_columns:
        names = ", ".join(f"'{name}'" for name in missing)
        raise SchemaMismatchError(
            f"{table}: the data has no column {names}, which the table has; nothing was written. "
            "Set schema.allow_missing_columns: true to write it as null."
        )
    return missing


def _refuse_unmergeable_names(df: DataFrame, table: str, spec: WriteSpec) -> None:
    """A merge (or journal) refuses a column with a backtick in its name: Delta's MERGE into a table with
    the change data feed on spells each column into SQL text unquoted, and fails on it."""
    ticked = [name for name in df.columns if "`" in name]
    if ticked and spec.mode in ("merge", "journal"):
        names = ", ".join(f"'{name}'" for name in ticked)
        raise SchemaMismatchError(
            f"{table}: column {names} has a backtick in its name, which Delta cannot merge into a table "
            f"with the change data feed on (write.mode: {spec.mode}); nothing was written. "
            "Rename it in cleanse (step: rename)."
        )


def prepare(
    spark: SparkSession,
    df: DataFrame,
    table: str,
    spec: WriteSpec,
    run_started: datetime,
    snapshot: DataFrame | None = None,
    *,
    before: int | None,
    passed: Column | None = None,
) -> Prepared:
    """Build what will be written (lazily); journal plans are classified against the current versions.

    ``snapshot`` holds every row read, quarantined ones included (a journal's deletes need their keys);
    ``passed`` tells its rows that make up ``df``.
    ``before`` is the table's version when the run started (None: no table yet): the plan reads that
    version, so it stays what was planned once the write has changed the table.
    """
    from pyspark.sql import functions as F

    _refuse_unmergeable_names(df, table, spec)
    missing = missing_columns(spark, df, table, spec, exists=before is not None)
    if missing:
        filled = {name: F.lit(None).cast(kind) for name, kind in missing.items()}
        df = df.withColumns(filled)
        snapshot = snapshot.withColumns(filled) if snapshot is not None else None
    if spec.mode == "journal":
        assert spec.journal is not None
        target = _tables.at_version(spark, table, before) if before is not None else None
        plan = journal.plan(df, target, spec.journal, run_started, snapshot, table=table, passed=passed)
        return Prepared(plan.classified, plan=plan)
    return Prepared(df)


@contextmanager
def _view(df: DataFrame) -> Iterator[str]:
    """``df`` as a temporary view (its name), for the length of the block."""
    name = f"thimble_batch_{uuid.uuid4().hex}"
    df.createOrReplaceTempView(name)
    try:
        yield name
    finally:
        df.sparkSession.catalog.dropTempView(name)


def _merge(df: DataFrame, table: str, keys: tuple[str, ...], new: list[str]) -> None:
    """Upsert ``df`` by ``keys``: a changed row updates its match, a new key is inserted. The ``new``
    columns, which the table does not have yet, are added by the MERGE itself (schema evolution)."""
    on = " AND ".join(f"t.{quote(k)} = s.{quote(k)}" for k in keys)
    others = [c for c in df.columns if c not in keys]
    columns = ", ".join(quote(c) for c in df.columns)
    values = ", ".join(f"s.{quote(c)}" for c in df.columns)
    update = ""
    if others:
        # A new column is null in every row of the table: a row whose value is not null changed.
        changed = " OR ".join(
            f"s.{quote(c)} IS NOT NULL" if c in new else f"NOT (t.{quote(c)} <=> s.{quote(c)})"
            for c in others
        )
        assignments = ", ".join(f"{quote(c)} = s.{quote(c)}" for c in others)
        update = f"WHEN MATCHED AND ({changed}) THEN UPDATE SET {assignments} "
    with _view(df) as source:
        df.sparkSession.sql(
            f"MERGE INTO {quote_table(table)} t USING {source} s ON {on} "
            f"{update}WHEN NOT MATCHED THEN INSERT ({columns}) VALUES ({values})"
        )


def _merge_journal(plan: journal.JournalPlan, table: str) -> None:
    staged = plan.staged()
    with _view(staged) as source:
        staged.sparkSession.sql(journal.merge_statement(plan, quote_table(table), source))


def _replace(df: DataFrame, table: str, partition_by: tuple[str, ...]) -> None:
    """Overwrite the whole table with ``df``, its schema (and partitioning) included, in one commit."""
    writer = df.write.format("delta").mode("overwrite").option("overwriteSchema", "true")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    writer.saveAsTable(table)


def write(
    spark: SparkSession,
    prepared: Prepared,
    table: str,
    spec: WriteSpec,
    metadata: dict[str, Any],
    before: int | None,
    once: tuple[str, int] | None = None,
) -> tuple[int | None, bool]:
    """Write ``prepared`` in one commit tagged with ``metadata``; return (table version, whether it committed).

    ``before`` is the table's version when the run started (None: the table does not exist yet). New
    columns (``allow_new_columns``) are added in the same commit: by the MERGE's schema evolution, or the
    write's ``mergeSchema``. ``once`` makes it Delta's idempotent write (see
    :func:`~thimble.etl._tables.commit_metadata`).
    """
    data = prepared.plan.opened() if prepared.plan is not None else prepared.df
    new_columns = check_schema(spark, data, table, spec, exists=before is not None)
    with _tables.commit_metadata(
        spark, metadata, allow_new_columns=bool(new_columns), once=once if before is not None else None
    ):
        if before is None:
            _tables.create_from(data, table, list(spec.partition_by))
        elif spec.mode == "journal":
            assert prepared.plan is not None
            _merge_journal(prepared.plan, table)
        elif spec.mode == "merge":
            _merge(data, table, spec.keys, new_columns)
        else:
            from pyspark.sql import functions as F

            writer = data.writeTo(table)
            if new_columns:
                writer = writer.option("mergeSchema", "true")
            if spec.mode == "append":
                writer.append()
            elif spec.overwrite_schema:
                _replace(data, table, spec.partition_by)
            elif spec.partition_by:
                writer.overwritePartitions()
            else:
                writer.overwrite(F.lit(True))
    after = _tables.version(spark, table)
    return after, after != before


def write_in_one_pass(
    spark: SparkSession, df: DataFrame, table: str, spec: WriteSpec, metadata: dict[str, Any]
) -> int | None:
    """Append ``df`` to the existing ``table`` (or, with ``overwrite_schema``, replace its rows and schema)
    in one commit tagged with ``metadata``, as ONE Spark job; return the version committed (None: no commit,
    e.g. nothing to append).
    """
    from pyspark.sql import functions as F

    if not (spec.mode == "append" or (spec.mode == "overwrite" and spec.overwrite_schema)):
        raise ValueError(f"one-pass writes append or replace a table, not '{spec.mode}'")
    new_columns = check_schema(spark, df, table, spec, exists=True)
    writer = df.writeTo(table)
    if new_columns:
        writer = writer.option("mergeSchema", "true")
    # The version Delta committed in this session is exact (no history lookup, not another writer's).
    spark.conf.unset(_tables.LAST_COMMIT_CONF)
    with _tables.commit_metadata(spark, metadata):
        if spec.mode == "append":
            writer.append()
        else:
            # Not saveAsTable: Spark reports observed metrics of this write only through DataSource V2.
            writer.option("overwriteSchema", "true").overwrite(F.lit(True))
    committed = spark.conf.get(_tables.LAST_COMMIT_CONF, None)
    return int(committed) if committed else None


def merge_counts(spark: SparkSession, table: str, version: int | None) -> dict[str, int]:
    """Inserted/updated counts of a merge commit, from Delta's operation metrics."""
    if version is None:
        return {}
    rows = spark.sql(f"DESCRIBE HISTORY {quote_table(table)} LIMIT 5").select("version", "operationMetrics")
    for row in rows.collect():
        if row["version"] == version:
            metrics = row["operationMetrics"] or {}
            return {
                "inserted": int(metrics.get("numTargetRowsInserted", metrics.get("numOutputRows", 0))),
                "updated": int(metrics.get("numTargetRowsUpdated", 0)),
            }
    return {}
