"""Warehouse tables: names, existence, versions, and the metadata every commit carries."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote, urlparse

from thimble.common.config import ThimbleSettings
from thimble.common.features import qualified_table
from thimble.common.logging import get_logger
from thimble.common.spark import uses_connect
from thimble.etl._sql import quote_table
from thimble.etl.config import check_table_name
from thimble.etl.errors import EtlError, TableNotFoundError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = get_logger(__name__)
T = TypeVar("T")
USER_METADATA_CONF = "spark.databricks.delta.commitInfo.userMetadata"
AUTO_MERGE_CONF = "spark.databricks.delta.schema.autoMerge.enabled"
CDF_PROPERTY = "delta.enableChangeDataFeed"
LAST_COMMIT_CONF = "spark.databricks.delta.lastCommitVersionInSession"
TXN_APP_ID_CONF = "spark.databricks.delta.write.txnAppId"
TXN_VERSION_CONF = "spark.databricks.delta.write.txnVersion"


class AlreadyCommitted(Exception):
    """Delta skipped an idempotent write: a commit with the same ``(txnAppId, txnVersion)`` is in the table."""


def qualified(table: str, settings: ThimbleSettings) -> str:
    """``name`` -> ``database.name`` (the settings' warehouse database); ``db.name`` unchanged."""
    return qualified_table(table, settings.warehouse.database)


def argument(table: object, settings: ThimbleSettings, function: str) -> str:
    """The ``table`` a caller gave ``function``, checked by the config's rule and :func:`qualified`; an
    :class:`EtlError` on one line naming the argument and its value (cut when long) otherwise."""
    try:
        name = check_table_name(table)
    except ValueError as exc:
        shown = (
            f"{table[:40]!r}... ({len(table)} characters)"
            if isinstance(table, str) and len(table) > 40
            else repr(table)
        )
        raise EtlError(f"{function}(table={shown}): {exc}") from None
    return qualified(name, settings)


def adopt_orphan(spark: SparkSession, table: str) -> str | None:
    """Register the Delta table a run left at ``table``'s own location, killed after the table's first
    commit and before the metastore entry; its path, or None when there is no such table.

    Without this every later run fails, as the location is "not empty" (Spark in this process only: a Spark
    Connect server finishes a killed client's write).
    """
    if uses_connect(spark) or exists(spark, table):
        return None
    location = _with_session(
        spark, table, lambda session, ident: str(session.sessionState().catalog().defaultTablePath(ident))
    )
    parsed = urlparse(location or "")
    if parsed.scheme != "file":
        return None
    path = unquote(parsed.path)
    if not any(Path(path, "_delta_log").glob("*.json")):
        return None
    spark.catalog.createTable(table, path=path, source="delta")
    log.warning("%s: registered the Delta table a stopped run had written at %s", table, path)
    return path


def exists(spark: SparkSession, table: str) -> bool:
    """Whether ``table`` exists.

    In this process the metastore answers first. Spark's ``tableExists`` loads the table, and loading a
    Delta table brings its snapshot up to date: after another writer's commit (a native append to the
    metrics table) that costs a listing and a replay of its log, about 0.25 s. It still answers when
    the metastore does not know the name (a view, a name in another catalog).
    """
    in_metastore = _with_session(
        spark, table, lambda session, ident: bool(session.sessionState().catalog().tableExists(ident))
    )
    return bool(in_metastore) or bool(spark.catalog.tableExists(table))


def require(spark: SparkSession, table: str) -> None:
    if not exists(spark, table):
        raise TableNotFoundError(f"no table '{table}' in the warehouse")


def version(spark: SparkSession, table: str) -> int | None:
    """The table's current version, or None when it does not exist."""
    if not exists(spark, table):
        return None
    latest = _snapshot_version(spark, table)
    if latest is not None:
        return latest
    row = spark.sql(f"DESCRIBE HISTORY {quote_table(table)} LIMIT 1").select("version").first()
    return int(row[0]) if row else None


def at_version(spark: SparkSession, table: str, version: int) -> DataFrame:
    """The table as it was at ``version``.

    A plan on it is not planned again when the table is written: Spark re-plans every cached frame
    that reads a table after each write to it, which for a Delta table means listing its files again.
    """
    return spark.read.format("delta").option("versionAsOf", version).table(table)


def append_rows(
    spark: SparkSession, table: str, rows: list[tuple[object, ...]], once: tuple[str, int] | None = None
) -> bool | None:
    """Append a few ``rows`` (tuples in column order) to a Delta table on a local filesystem, natively.

    A handful of rows through Spark costs a job and a commit (about 0.3 s); delta-rs commits them to the
    same log in a few milliseconds. With ``once`` (``(app id, version)``) it is Delta's idempotent write:
    False, nothing written, when the table holds a commit of that app id at that version or later. None
    (nothing written) when the table is not on a local filesystem or delta-rs cannot write it: the caller
    appends through Spark.
    """
    try:
        import pyarrow as pa
        from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
    except ImportError:
        return None
    path = _local_path(spark, table)
    if path is None:
        return None
    try:
        target = DeltaTable(path)
        if once is not None:
            done = target.transaction_version(once[0])
            if done is not None and done >= once[1]:
                return False
        schema = pa.schema(target.schema().to_arrow())
        data = pa.Table.from_arrays(
            [pa.array([row[i] for row in rows], type=field.type) for i, field in enumerate(schema)],
            schema=schema,
        )
        properties = None if once is None else CommitProperties(app_transactions=[Transaction(*once)])
        write_deltalake(target, data, mode="append", commit_properties=properties)
    except Exception as exc:  # an unsupported table feature, a type that does not convert
        log.debug("native append to %s not possible (%s); appending through Spark", table, exc)
        return None
    return True


def _local_path(spark: SparkSession, table: str) -> str | None:
    """The table's folder when this process sees it on its own filesystem (over Connect: the server's
    location, if its Delta log is here too)."""
    if uses_connect(spark):
        row = spark.sql(f"DESCRIBE DETAIL {quote_table(table)}").select("location").first()
        location = str(row[0]) if row and row[0] else None
    else:
        location = _with_delta_log(
            spark, table, lambda log, session, ident: str(log.forTable(session, ident).dataPath())
        )
    parsed = urlparse(location or "")
    if parsed.scheme != "file":
        return None
    path = unquote(parsed.path)
    return path if Path(path, "_delta_log").is_dir() else None


def _snapshot_version(spark: SparkSession, table: str) -> int | None:
    """The version of the table's fresh Delta snapshot: a listing of its log, no Spark job (reading the
    history is one). None when it is not a Delta table, or this Delta has no such call."""
    found = _with_delta_log(
        spark, table, lambda log, session, ident: int(log.forTableWithSnapshot(session, ident)._2().version())
    )
    return found if found is not None and found >= 0 else None


def _with_delta_log(spark: SparkSession, table: str, use: Callable[[Any, Any, Any], T]) -> T | None:
    """``use(DeltaLog class, JVM session, table identifier)`` through Delta's JVM API; None when it fails
    or there is no JVM in this process (Spark Connect)."""
    return _with_session(
        spark,
        table,
        lambda session, ident: use(spark._jvm.org.apache.spark.sql.delta.DeltaLog, session, ident),  # type: ignore[union-attr]
    )


def _with_session(spark: SparkSession, table: str, use: Callable[[Any, Any], T]) -> T | None:
    """``use(JVM session, table identifier)``; None when it fails, the name is not ``[database.]table``
    or there is no JVM in this process (Spark Connect)."""
    if uses_connect(spark):
        return None
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException

    try:
        session = spark._jsparkSession
        ident = session.sessionState().sqlParser().parseTableIdentifier(table)
        return use(session, ident)
    except (Py4JError, PySparkException):  # PySparkException: a Java exception, as PySpark raises it
        return None


def commits(spark: SparkSession, table: str) -> list[dict[str, Any]]:
    """Every commit still in the table's log, newest first, with its parsed thimble metadata."""
    rows = (
        spark.sql(f"DESCRIBE HISTORY {quote_table(table)}")
        .select("version", "timestamp", "operation", "userMetadata", "operationMetrics")
        .collect()
    )
    out = []
    for row in rows:
        meta: dict[str, Any] = {}
        if row["userMetadata"]:
            try:
                parsed = json.loads(row["userMetadata"])
                meta = parsed.get("thimble", {}) if isinstance(parsed, dict) else {}
            except ValueError:
                meta = {}
        out.append(
            {
                "version": int(row["version"]),
                "timestamp": row["timestamp"],
                "operation": row["operation"],
                "metrics": dict(row["operationMetrics"] or {}),
                "thimble": meta,
            }
        )
    return out


@contextmanager
def commit_metadata(
    spark: SparkSession,
    metadata: dict[str, Any],
    allow_new_columns: bool = False,
    once: tuple[str, int] | None = None,
) -> Iterator[None]:
    """Tag the Delta commit(s) made inside the block with ``{"thimble": metadata}``.

    With ``once`` (``(app id, version)``), the block's one write is Delta's idempotent write: when the table
    already holds a commit of that app id at that version or later, Delta skips it and the block raises
    :class:`AlreadyCommitted`.
    """
    previous_merge = spark.conf.get(AUTO_MERGE_CONF, "false")
    spark.conf.set(USER_METADATA_CONF, json.dumps({"thimble": metadata}, default=str, sort_keys=True))
    if allow_new_columns:
        spark.conf.set(AUTO_MERGE_CONF, "true")
    if once is not None:
        spark.conf.unset(LAST_COMMIT_CONF)
        spark.conf.set(TXN_APP_ID_CONF, once[0])
        spark.conf.set(TXN_VERSION_CONF, str(once[1]))
    try:
        yield
    finally:
        spark.conf.unset(USER_METADATA_CONF)
        spark.conf.set(AUTO_MERGE_CONF, previous_merge or "false")
        if once is not None:
            spark.conf.unset(TXN_APP_ID_CONF)
            spark.conf.unset(TXN_VERSION_CONF)
    if once is not None and spark.conf.get(LAST_COMMIT_CONF, None) is None:
        raise AlreadyCommitted(f"a commit of {once[0]} at {once[1]} is in the table")


def create_from(df: DataFrame, table: str, partition_by: list[str]) -> None:
    """Create ``table`` from ``df`` in one commit, with the change data feed on."""
    writer = df.write.format("delta").mode("error").option(CDF_PROPERTY, "true")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    writer.saveAsTable(table)
