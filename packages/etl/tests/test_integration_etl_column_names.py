"""Column names a user's data or config may hold: a backtick, a dot, SQL text. Each is a column, never SQL.

And a journal's change detection agrees with a merge's ``<=>``: -0.0 is 0.0, NaN is NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from pyspark.sql import SparkSession

from thimble.common.config import ThimbleSettings
from thimble.etl import changes, history, run_table, table_version, write_dataframe
from thimble.etl.errors import EtlError, SchemaMismatchError
from thimble.testing import in_process_pass

from .conftest import config

pytestmark = pytest.mark.integration

TICK = "a`b"
DOT = "c.d"
INJECTION = "x` INT, `pwned"


def _operations(spark: SparkSession, name: str) -> list[tuple[int, str]]:
    rows = spark.sql(f"DESCRIBE HISTORY {name}").select("version", "operation").collect()
    return sorted((int(r.version), r.operation) for r in rows)


def test_a_new_column_is_added_by_the_merge_itself_and_sql_in_a_name_stays_a_name(
    spark: SparkSession, spark_settings: ThimbleSettings, table_name: str, json_source: Callable[..., str]
) -> None:
    name = f"{spark_settings.warehouse.database}.{table_name}"

    def run(rows: list[dict[str, Any]]) -> Any:
        cfg = config(
            table=table_name,
            source={"type": "files", "path": json_source(rows), "format": "json"},
            schema_={"evolution": "allow_new_columns"},
            write={"mode": "merge", "keys": ["k"]},
        )
        return run_table(cfg, spark=spark, settings=spark_settings)

    run([{"k": "a", "v": 1}])
    second = run([{"k": "a", "v": 1, DOT: 2}, {"k": "b", "v": 2, DOT: 3}])
    assert (second.status, second.inserted, second.updated) == ("committed", 1, 1)
    assert spark.table(name).columns == ["k", "v", DOT]
    assert sorted(tuple(r) for r in spark.table(name).collect()) == [("a", 1, 2), ("b", 2, 3)]
    # The new column and the rows are one commit: no schema version of its own.
    assert _operations(spark, name) == [(0, "CREATE TABLE AS SELECT"), (1, "MERGE")]

    # SQL in a name reaches no statement as SQL: no column 'x' or 'pwned', no version.
    for hostile in (INJECTION, TICK):
        with pytest.raises(EtlError, match="nothing was written"):
            run([{"k": "a", "v": 1, DOT: 2, hostile: 2}])
        assert spark.table(name).columns == ["k", "v", DOT]
        assert table_version(table_name, spark=spark, settings=spark_settings) == 1


def test_write_dataframe_merges_a_new_column_in_one_commit(
    spark: SparkSession, spark_settings: ThimbleSettings, table_name: str
) -> None:
    name = f"{spark_settings.warehouse.database}.{table_name}"
    write_dataframe(
        spark.createDataFrame([("a", 1.0)], "k string, v double"),
        table_name,
        mode="merge",
        keys=["k"],
        settings=spark_settings,
    )
    wider = spark.createDataFrame([("a", 1.0, "z"), ("b", 2.0, None)], "k string, v double, `c.d` string")
    result = write_dataframe(
        wider, table_name, mode="merge", keys=["k"], allow_new_columns=True, settings=spark_settings
    )
    assert (result.status, result.inserted, result.updated) == ("committed", 1, 1)
    assert spark.table(name).columns == ["k", "v", DOT]
    assert sorted(tuple(r) for r in spark.table(name).collect()) == [("a", 1.0, "z"), ("b", 2.0, None)]
    assert [op for _, op in _operations(spark, name)] == ["CREATE TABLE AS SELECT", "MERGE"]
    # Again: the new column compares as an existing one now.
    again = write_dataframe(wider, table_name, mode="merge", keys=["k"], settings=spark_settings)
    assert (again.inserted, again.updated) == (0, 0)

    ticked = spark.createDataFrame([("a", 1.0, "z", 1)], "k string, v double, `c.d` string, `a``b` int")
    with pytest.raises(SchemaMismatchError, match="column 'a`b' has a backtick"):
        write_dataframe(
            ticked, table_name, mode="merge", keys=["k"], allow_new_columns=True, settings=spark_settings
        )
    assert table_version(table_name, spark=spark, settings=spark_settings) == again.version


@pytest.mark.parametrize("declared", [True, False], ids=["declared", "inferred"])
def test_every_module_reads_a_column_with_a_backtick_or_a_dot_by_its_name(
    spark: SparkSession,
    spark_settings: ThimbleSettings,
    table_name: str,
    json_source: Callable[..., str],
    declared: bool,
) -> None:
    name = f"{spark_settings.warehouse.database}.{table_name}"
    rows = [
        {"k": "1", TICK: " x ", DOT: 1.0},
        {"k": "2", TICK: None, DOT: 3.0},
        {"k": "3", TICK: "y", DOT: -1.0},
    ]
    cfg = config(
        table=table_name,
        source={"type": "files", "path": json_source(rows), "format": "json"},
        schema_={"columns": {"k": "string", TICK: "string", DOT: "double"}} if declared else {},
        cleanse=[{"step": "trim", "columns": [TICK]}, {"step": "fill", "values": {DOT: 0}}],
        validate_=[{"rule": "not_null", "columns": [TICK]}, {"rule": "range", "column": DOT, "min": 0}],
        quality={
            "metrics": [
                {"metric": "completeness", "column": TICK},
                {"metric": "mean", "column": DOT},
                {"metric": "quantile", "column": DOT, "quantile": 0.5},
            ]
        },
    )
    result = run_table(cfg, spark=spark, settings=spark_settings)
    assert (result.status, result.rows_quarantined) == ("committed", 2)
    assert (result.metrics[f"completeness:{TICK}"], result.metrics[f"mean:{DOT}"]) == (1.0, 1.0)
    kept = spark.table(name).select("k", f"`{TICK.replace('`', '``')}`", f"`{DOT}`").collect()
    assert [tuple(r) for r in kept] == [("1", "x", 1.0)]
    # The change feed's empty answer (nothing after the latest version) has the table's columns.
    latest = history(table_name, spark=spark, settings=spark_settings)[0].version
    none = changes(table_name, since_version=latest, spark=spark, settings=spark_settings)
    cdf = ["_change_type", "_commit_version", "_commit_timestamp"]
    assert none.columns == [*spark.table(name).columns, *cdf]
    assert sorted(spark.table(name).columns) == sorted(["k", TICK, DOT])
    assert none.count() == 0


def test_a_journal_keyed_by_a_dotted_name_and_a_backtick_refused_up_front(
    spark: SparkSession, spark_settings: ThimbleSettings, table_name: str, json_source: Callable[..., str]
) -> None:
    name = f"{spark_settings.warehouse.database}.{table_name}"

    def run(rows: list[dict[str, Any]], columns: dict[str, str] | None = None) -> Any:
        cfg = config(
            table=table_name,
            source={"type": "files", "path": json_source(rows), "format": "json"},
            schema_={"columns": columns or {DOT: "string", "v": "double", "at": "timestamp"}},
            journal={"keys": [DOT], "order_by": "at"},
            write={"mode": "journal"},
        )
        return run_table(cfg, spark=spark, settings=spark_settings)

    day = "2026-01-0{}T00:00:00".format
    assert run([{DOT: "a", "v": 1.0, "at": day(2)}]).inserted == 1
    # A change, and a late row that a version covers (skipped) against one it does not (quarantined).
    second = run([{DOT: "a", "v": 2.0, "at": day(3)}, {DOT: "a", "v": 1.0, "at": day(2)}])
    assert (second.updated, second.rows_quarantined) == (1, 0)
    late = run([{DOT: "a", "v": 9.0, "at": day(1)}])
    assert (late.status, late.rows_quarantined) == ("unchanged", 1)
    rows = spark.table(name).select(f"`{DOT}`", "v", "is_current").orderBy("valid_from").collect()
    assert [tuple(r) for r in rows] == [("a", 1.0, False), ("a", 2.0, True)]

    with pytest.raises(SchemaMismatchError, match="column 'a`b' has a backtick"):
        run(
            [{DOT: "a", "v": 3.0, "at": day(4), TICK: "t"}],
            {DOT: "string", "v": "double", "at": "timestamp", TICK: "string"},
        )
    assert table_version(table_name, spark=spark, settings=spark_settings) == 1


@in_process_pass
def test_the_journal_hashes_values_that_compare_equal_alike(
    spark: SparkSession, spark_settings: ThimbleSettings, table_name: str
) -> None:
    """-0.0 and 0.0 are equal to a merge's ``<=>`` and to the journal; so are two NaNs."""

    def load(v: float, f: float) -> Any:
        df = spark.createDataFrame([("a", v, f)], "k string, v double, f float")
        return write_dataframe(
            df, table_name, mode="journal", journal={"keys": ["k"]}, settings=spark_settings
        )

    assert load(0.0, 0.0).status == "committed"
    assert load(-0.0, -0.0).status == "unchanged"
    assert load(-0.0, 0.0).status == "unchanged"
    assert load(1.5, 0.0).updated == 1
    assert load(math.nan, 0.0).updated == 1
    assert load(math.nan, -0.0).status == "unchanged"
    name = f"{spark_settings.warehouse.database}.{table_name}"
    assert spark.table(name).count() == 3


def test_a_table_name_the_config_refuses_is_refused_by_every_function_before_spark(
    spark: SparkSession, spark_settings: ThimbleSettings
) -> None:
    df = spark.createDataFrame([("a", 1)], "k string, v int")
    for hostile in (TICK, INJECTION, "a.b.c", "t\n"):
        with pytest.raises(EtlError, match=r"^write_dataframe\(table='.*'\): a table is 'name' or"):
            write_dataframe(df, hostile, settings=spark_settings)
        with pytest.raises(EtlError, match=r"^history\(table='.*'\): a table is 'name' or"):
            history(hostile, spark=spark, settings=spark_settings)
    assert not [t for t in spark.catalog.listTables(spark_settings.warehouse.database) if "pwned" in t.name]


def test_a_journal_adds_a_new_column_in_its_one_merge(
    spark: SparkSession, spark_settings: ThimbleSettings, table_name: str, json_source: Callable[..., str]
) -> None:
    name = f"{spark_settings.warehouse.database}.{table_name}"

    def run(rows: list[dict[str, Any]]) -> Any:
        cfg = config(
            table=table_name,
            source={"type": "files", "path": json_source(rows), "format": "json"},
            schema_={"evolution": "allow_new_columns"},
            journal={"keys": ["k"]},
            write={"mode": "journal"},
        )
        return run_table(cfg, spark=spark, settings=spark_settings)

    run([{"k": "a", "v": 1}])
    second = run([{"k": "a", "v": 1, DOT: "new"}, {"k": "b", "v": 2}])
    assert (second.status, second.inserted, second.updated) == ("committed", 1, 1)
    columns = ["k", "v", "row_hash", "valid_from", "valid_to", "is_current", DOT]
    assert spark.table(name).columns == columns
    assert [op for _, op in _operations(spark, name)] == ["CREATE TABLE AS SELECT", "MERGE"]
    rows = spark.table(name).select("k", f"`{DOT}`", "is_current").orderBy("k", "valid_from").collect()
    assert [tuple(r) for r in rows] == [("a", None, False), ("a", "new", True), ("b", None, True)]
