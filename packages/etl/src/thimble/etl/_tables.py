"""Warehouse tables: names, existence, versions, and the metadata every commit carries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from thimble.common.config import ThimbleSettings
from thimble.etl.errors import TableNotFoundError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

USER_METADATA_CONF = "spark.databricks.delta.commitInfo.userMetadata"
AUTO_MERGE_CONF = "spark.databricks.delta.schema.autoMerge.enabled"
CDF_PROPERTY = "delta.enableChangeDataFeed"


def qualified(table: str, settings: ThimbleSettings) -> str:
    """``name`` -> ``database.name`` (the settings' warehouse database); ``db.name`` unchanged."""
    return table if "." in table else f"{settings.warehouse.database}.{table}"


def quoted(table: str) -> str:
    return ".".join(f"`{part}`" for part in table.split("."))


def exists(spark: SparkSession, table: str) -> bool:
    return bool(spark.catalog.tableExists(table))


def require(spark: SparkSession, table: str) -> None:
    if not exists(spark, table):
        raise TableNotFoundError(f"no table '{table}' in the warehouse")


def version(spark: SparkSession, table: str) -> int | None:
    """The table's current version, or None when it does not exist."""
    from delta.tables import DeltaTable

    if not exists(spark, table):
        return None
    row = DeltaTable.forName(spark, table).history(1).select("version").first()
    return int(row[0]) if row else None


def commits(spark: SparkSession, table: str) -> list[dict[str, Any]]:
    """Every commit still in the table's log, newest first, with its parsed thimble metadata."""
    from delta.tables import DeltaTable

    rows = (
        DeltaTable.forName(spark, table)
        .history()
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
    spark: SparkSession, metadata: dict[str, Any], allow_new_columns: bool = False
) -> Iterator[None]:
    """Tag the Delta commit(s) made inside the block with ``{"thimble": metadata}``."""
    previous_merge = spark.conf.get(AUTO_MERGE_CONF, "false")
    spark.conf.set(USER_METADATA_CONF, json.dumps({"thimble": metadata}, default=str, sort_keys=True))
    if allow_new_columns:
        spark.conf.set(AUTO_MERGE_CONF, "true")
    try:
        yield
    finally:
        spark.conf.unset(USER_METADATA_CONF)
        spark.conf.set(AUTO_MERGE_CONF, previous_merge or "false")


def create_from(df: DataFrame, table: str, partition_by: list[str]) -> None:
    """Create ``table`` from ``df`` in one commit, with the change data feed on."""
    writer = df.write.format("delta").mode("errorifexists").option(CDF_PROPERTY, "true")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    writer.saveAsTable(table)
