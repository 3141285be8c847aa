"""Real Spark failures become one line that finds the user's field in their config."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from thimble.common.errors import SparkFailure, spark_failure
from thimble.etl.errors import SparkJobError
from thimble.testing import OVER_CONNECT

from .conftest import config

pytestmark = pytest.mark.integration


def _failure(action: Callable[[], object]) -> SparkFailure:
    with pytest.raises(Exception) as caught:  # noqa: PT011 (PySpark and Py4J errors share no base)
        action()
    failure = spark_failure(caught.value)
    assert failure is not None, caught.value
    assert "\n" not in failure.reason
    assert "SQLSTATE" not in failure.reason
    assert "at org.apache" not in failure.reason
    return failure


@pytest.fixture
def frame(spark: SparkSession) -> DataFrame:
    return spark.createDataFrame([("c1", "lots")], "client_id string, amount string")


TABLE = {
    "table": "clients",
    "source": {"type": "files", "path": "/data/clients.json", "format": "json"},
    "schema_": {"columns": {"client_id": "string", "amount": "int"}},
    "cleanse": [
        {"step": "trim", "columns": ["client_id"]},
        {"step": "sql", "column": "double_amount", "expression": "cast(amount as int) * 2"},
        {"step": "drop_where", "condition": "client_id ==== 'test'"},
    ],
    "write": {"mode": "append"},
}


def test_failures_in_the_users_sql_name_its_field(frame: DataFrame) -> None:
    cast = _failure(lambda: frame.select(F.expr("cast(amount as int) * 2")).collect())
    assert cast.condition == "CAST_INVALID_INPUT"
    assert cast.reason.startswith(
        "CAST_INVALID_INPUT: The value 'lots' of the type \"STRING\" cannot be cast"
    )
    parse = _failure(lambda: frame.filter("client_id ==== 'test'").collect())
    assert parse.condition == "PARSE_SYNTAX_ERROR"

    located = [
        str(SparkJobError("db.clients", f).located("tables/clients.yaml", config(**TABLE)))
        for f in (cast, parse)
    ]

    assert located[0].startswith("tables/clients.yaml: cleanse[1].expression: db.clients: Spark failed")
    assert located[1].startswith("tables/clients.yaml: cleanse[2].condition: db.clients: Spark failed")


def test_a_failing_cast_to_a_declared_type_names_the_declaration(frame: DataFrame) -> None:
    cast = _failure(lambda: frame.select(F.col("amount").cast("int")).collect())

    message = str(SparkJobError("db.clients", cast).located("tables/clients.yaml", config(**TABLE)))

    assert message.startswith("tables/clients.yaml: schema.columns.amount: db.clients: Spark failed")
    assert "thimble" not in message.split("Spark failed", 1)[1]


def test_a_java_failure_outside_pyspark_is_one_line(frame: DataFrame) -> None:
    regex = _failure(lambda: frame.select(F.col("amount").rlike("(?P<x>a)")).collect())

    assert regex.reason.startswith("not a valid regular expression for Spark (Java): Unknown inline modifier")
    assert regex.quoted == ("(?P<x>a)",)


def test_what_a_python_worker_raised_is_its_one_line(frame: DataFrame) -> None:
    def no_amount(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        # Defined here, so that it is pickled by value: a Spark Connect server cannot import this module.
        for batch in batches:
            try:
                int(batch["amount"].iloc[0])
            except ValueError as exc:
                raise LookupError(f"client {batch['client_id'].iloc[0]}: no amount") from exc
            yield batch

    raised = _failure(lambda: frame.mapInPandas(no_amount, frame.schema).collect())

    assert raised.reason == "a Python worker raised LookupError: client c1: no amount"


def test_a_delta_lake_failure_keeps_its_condition(spark: SparkSession, tmp_path: Path) -> None:
    """Spark's error classes in process lack Delta Lake's: its failures are read from their own text."""
    (tmp_path / "notes.txt").write_text("not a Delta table")
    table = f"t_{uuid.uuid4().hex[:10]}"

    failure = _failure(
        lambda: spark.range(3).writeTo(table).using("delta").tableProperty("location", str(tmp_path)).create()
    )

    assert failure.condition == "DELTA_CREATE_TABLE_WITH_NON_EMPTY_LOCATION"
    assert failure.reason.startswith("DELTA_CREATE_TABLE_WITH_NON_EMPTY_LOCATION: Cannot create table")


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (r"^\p{Lower}+$", None),
        (r"^(?P<prefix>[a-z])", "Java names a group (?<name>...), not (?P<name>...)"),
        (r"^[a-z", "Unclosed character class"),
    ],
)
def test_patterns_are_checked_by_java(spark: SparkSession, pattern: str, expected: str | None) -> None:
    """By the running session's JVM in process; over Spark Connect, by a small JVM of the client's own."""
    from thimble.etl._regex import java_regex_problem

    if not OVER_CONNECT:
        assert spark.sparkContext._jvm is not None
    problem = java_regex_problem(pattern)
    if expected is None:
        assert problem is None
    else:
        assert problem is not None
        assert expected in problem
