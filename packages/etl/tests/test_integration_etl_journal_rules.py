"""The journal's rules on the real Spark/Delta write: deletes, quarantine, conflicts, re-runs, guards."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from pyspark.sql import SparkSession

from thimble.common.config import ThimbleSettings
from thimble.etl import run_table, table_version
from thimble.etl.errors import ConfigError, EtlError, SchemaMismatchError, TableNotFoundError
from thimble.etl.journal import CONFLICT_RULE
from thimble.testing import in_process_pass

from .conftest import config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCHEMA = {"columns": {"id": "string", "segment": "string", "score": "double", "at": "timestamp"}}
Rows = list[dict[str, Any]]


def _config(table: str, path: str, schema: dict[str, Any] | None = SCHEMA, **journal: Any) -> Any:
    sections: dict[str, Any] = {
        "table": table,
        "source": {"type": "files", "path": path, "format": "json"},
        "validate_": [{"rule": "range", "column": "score", "min": 0}],
        "journal": {
            "keys": ["id"],
            "track": ["segment", "score"],
            "order_by": "at",
            "deletes": "close",
            **journal,
        },
        "write": {"mode": "journal"},
    }
    if schema is not None:
        sections["schema_"] = schema
    return config(**sections)


def _row(key: str | None, segment: str, day: int, score: float = 1.0) -> dict[str, Any]:
    return {"id": key, "segment": segment, "score": score, "at": f"2026-01-0{day}T00:00:00"}


def _versions(spark: SparkSession, settings: ThimbleSettings, table: str) -> list[tuple[Any, ...]]:
    name = f"{settings.warehouse.database}.{table}"
    return [
        (r.id, r.segment, r.valid_from, r.valid_to, r.is_current)
        for r in spark.table(name).orderBy("id", "valid_from").collect()
    ]


def _quarantined(spark: SparkSession, settings: ThimbleSettings, table: str) -> list[tuple[str, str]]:
    name = f"{settings.warehouse.database}.{table}_quarantine"
    return sorted((r.run_id, r.failed_rules[0]) for r in spark.table(name).collect())


def _day(n: int) -> datetime:
    return datetime(2026, 1, n)


def test_deletes_close_at_the_batch_time_and_bad_rows_are_never_deletions(
    spark: SparkSession, spark_settings: ThimbleSettings, table_name: str, json_source: Callable[[Rows], str]
) -> None:
    path = json_source([_row("a", "x", 1), _row("b", "x", 1), _row("c", "x", 1)])
    cfg = _config(table_name, path)
    run_table(cfg, spark=spark, settings=spark_settings)
    # b is gone; c fails validation: it is in the snapshot, with a value that cannot be loaded.
    json_source([_row("a", "y", 2), _row("c", "y", 2, score=-1.0)])
    second = run_table(cfg, spark=spark, settings=spark_settings)
    assert (second.updated, second.closed, second.rows_quarantined) == (1, 1, 1)
    # b comes back; a row whose key is unknown could be c's: no key is closed in this run.
    json_source([_row("a", "y", 2), _row("b", "x", 3), _row(None, "z", 3)])
    third = run_table(cfg, spark=spark, settings=spark_settings)
    assert (third.inserted, third.closed, third.rows_quarantined) == (1, 0, 1)
    assert _versions(spark, spark_settings, table_name) == [
        ("a", "x", _day(1), _day(2), False),
        ("a", "y", _day(2), None, True),
        ("b", "x", _day(1), _day(2), False),
        ("b", "x", _day(3), None, True),
        ("c", "x", _day(1), None, True),
    ]


def test_conflicting_rows_are_quarantined_and_a_rerun_changes_nothing(
    spark: SparkSession, spark_settings: ThimbleSettings, table_name: str, json_source: Callable[[Rows], str]
) -> None:
    batch = [
        _row("a", "x", 1),
        _row("a", "y", 1),  # same time, other value: which came last is unknown
        _row("b", "s1", 1),
        _row("b", "s1", 2),  # same version again: collapses into the first
        _row("b", "s3", 3),
        _row("b", "s3", 3),  # an exact duplicate is one version
    ]
    path = json_source(batch)
    cfg = _config(table_name, path)
    first = run_table(cfg, spark=spark, settings=spark_settings)
    assert (first.inserted, first.updated, first.rows_quarantined) == (1, 1, 2)
    assert _versions(spark, spark_settings, table_name) == [
        ("b", "s1", _day(1), _day(3), False),
        ("b", "s3", _day(3), None, True),
    ]
    assert _quarantined(spark, spark_settings, table_name) == [(first.run_id, CONFLICT_RULE)] * 2
    version = table_version(table_name, spark=spark, settings=spark_settings)

    again = run_table(cfg, spark=spark, settings=spark_settings)
    assert again.status == "unchanged"
    assert table_version(table_name, spark=spark, settings=spark_settings) == version
    # The same rows for the same reasons, and nothing taken for a late arrival.
    assert again.rows_quarantined == first.rows_quarantined
    assert [rule for run, rule in _quarantined(spark, spark_settings, table_name) if run == again.run_id] == [
        CONFLICT_RULE
    ] * 2

    strict = _config(f"{table_name}_strict", path, conflicts="fail")
    with pytest.raises(EtlError, match=r"2 rows share a key and an order_by time.*key a\).*conflicts: fail"):
        run_table(strict, spark=spark, settings=spark_settings)


@in_process_pass
def test_a_column_missing_from_the_source_is_a_schema_change(
    spark: SparkSession, spark_settings: ThimbleSettings, table_name: str, json_source: Callable[[Rows], str]
) -> None:
    path = json_source([_row("a", "x", 1), _row("b", "x", 1)])
    first = _config(table_name, path, schema=None, track=None, order_by=None, deletes="ignore")
    run_table(first, spark=spark, settings=spark_settings)
    version = table_version(table_name, spark=spark, settings=spark_settings)
    json_source([{"id": "a", "score": 1.0, "at": "2026-01-02T00:00:00"}])
    cfg = _config(table_name, path, schema=None, track=None, order_by=None, deletes="ignore")
    with pytest.raises(SchemaMismatchError, match=r"no column 'segment', which the table has") as caught:
        run_table(cfg, spark=spark, settings=spark_settings)
    assert "\n" not in str(caught.value)
    assert "allow_missing_columns" in str(caught.value)
    assert table_version(table_name, spark=spark, settings=spark_settings) == version

    accepted = _config(
        table_name, path, schema={"allow_missing_columns": True}, track=None, order_by=None, deletes="ignore"
    )
    result = run_table(accepted, spark=spark, settings=spark_settings)
    assert (result.updated, result.closed) == (1, 0)
    current = [v for v in _versions(spark, spark_settings, table_name) if v[4]]
    assert [(v[0], v[1]) for v in current] == [("a", None), ("b", "x")]


@in_process_pass
def test_an_empty_snapshot_cannot_close_every_key(
    spark: SparkSession, spark_settings: ThimbleSettings, table_name: str, json_source: Callable[[Rows], str]
) -> None:
    path = json_source([_row("a", "x", 1), _row("b", "x", 1), _row("c", "x", 1)])
    cfg = _config(table_name, path, order_by=None)
    run_table(cfg, spark=spark, settings=spark_settings)
    version = table_version(table_name, spark=spark, settings=spark_settings)
    json_source([])
    blocked = run_table(cfg, spark=spark, settings=spark_settings)
    assert blocked.status == "blocked"
    assert table_version(table_name, spark=spark, settings=spark_settings) == version
    failed = [c for c in blocked.checks if c.status == "fail"]
    assert [c.detail for c in failed] == [
        "closes 3 of 3 open keys (100%), more than journal.max_close_share 0.5: an empty or partial "
        "snapshot? Set journal.max_close_share: 1.0 to allow it"
    ]
    allowed = run_table(
        _config(table_name, path, order_by=None, max_close_share=1.0), spark=spark, settings=spark_settings
    )
    assert (allowed.status, allowed.closed) == ("committed", 3)


def test_a_value_that_does_not_cast_quarantines_its_row(
    spark: SparkSession, spark_settings: ThimbleSettings, table_name: str, json_source: Callable[[Rows], str]
) -> None:
    rows = [_row("a", "x", 1), {"id": "b", "segment": "x", "score": "high", "at": "2026-01-01T00:00:00"}]
    cfg = _config(table_name, json_source(rows))
    result = run_table(cfg, spark=spark, settings=spark_settings)
    assert (result.status, result.inserted, result.rows_quarantined) == ("committed", 1, 1)
    name = f"{spark_settings.warehouse.database}.{table_name}_quarantine"
    (bad,) = spark.table(name).collect()
    assert bad.failed_rules[0].startswith("source: value of 'score' is not a double: ")
    assert '"score": "high"' in bad.failed_rules[0]


def test_an_order_by_made_a_number_in_cleanse_is_refused_not_read_as_seconds(
    spark: SparkSession, spark_settings: ThimbleSettings, table_name: str, json_source: Callable[[Rows], str]
) -> None:
    rows = [{"id": "a", "segment": "x", "score": 1.0, "at": 1767225600000}]
    cfg = config(
        table=table_name,
        source={"type": "files", "path": json_source(rows), "format": "json"},
        cleanse=[{"step": "sql", "column": "at", "expression": "at + 0"}],
        journal={"keys": ["id"], "track": ["segment"], "order_by": "at"},
        write={"mode": "journal"},
    )
    with pytest.raises(ConfigError, match=r"journal\.order_by: column 'at' is bigint after cleanse"):
        run_table(cfg, spark=spark, settings=spark_settings)
    with pytest.raises(TableNotFoundError):  # nothing was written
        table_version(table_name, spark=spark, settings=spark_settings)
