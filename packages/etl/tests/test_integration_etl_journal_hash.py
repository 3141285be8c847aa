"""The journal's change hash on real Spark: -0.0 is 0.0 at any depth (struct fields, array elements, map
values, arrays of structs), as a merge's ``<=>`` sees it, and a value without -0.0 hashes as it always did."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from thimble.common.config import ThimbleSettings
from thimble.etl import write_dataframe
from thimble.etl.journal import row_hash
from thimble.testing import in_process_pass

pytestmark = pytest.mark.integration

NESTED = (
    "k string, s struct<x: double, a: array<float>, t: string>, "
    "aos array<struct<y: double, z: string>>, m map<string, double>, mm map<string, array<double>>, "
    "plain struct<n: bigint, w: string>"
)
COLUMNS = ["s", "aos", "m", "mm", "plain"]


def _row(k: str, x: Any, *, text: str = "t") -> tuple[Any, ...]:
    """A row whose every nested float is ``x``."""
    return (k, (x, [x, x], text), [(x, "z"), (x, None)], {"p": x}, {"q": [x]}, (1, "w"))


def _hashes(spark: SparkSession, rows: list[tuple[Any, ...]]) -> list[str]:
    df = spark.createDataFrame(rows, NESTED)
    types = {f.name: f.dataType for f in df.schema.fields}
    return [r[0] for r in df.select(row_hash(COLUMNS, types)).collect()]


@in_process_pass
def test_nested_negative_zero_opens_no_version_in_a_journal_nor_updates_a_merge(
    spark: SparkSession, spark_settings: ThimbleSettings, table_name: str
) -> None:
    def load(x: float, mode: str) -> Any:
        df = spark.createDataFrame([_row("a", x)], NESTED)
        if mode == "journal":
            return write_dataframe(
                df, f"{table_name}_j", mode="journal", journal={"keys": ["k"]}, settings=spark_settings
            )
        # A merge cannot compare maps (``<=>`` refuses them): its table has the other columns.
        return write_dataframe(
            df.drop("m", "mm"), f"{table_name}_m", mode="merge", keys=["k"], settings=spark_settings
        )

    # A merge of unchanged rows still commits (Delta rewrites their files) but updates none.
    for mode in ("journal", "merge"):
        assert load(0.0, mode).inserted == 1
        assert [load(x, mode).updated for x in (-0.0, 1.5)] == [0, 1], mode
    name = f"{spark_settings.warehouse.database}.{table_name}_j"
    assert spark.table(name).count() == 2


def _old_row_hash(columns: list[str]) -> Any:
    """The hash as it was before nested values were normalised (no top-level float column here)."""
    return F.sha2(F.to_json(F.struct(*[F.col(c) for c in columns])), 256)


def test_a_nested_value_without_negative_zero_hashes_as_before(spark: SparkSession) -> None:
    """Stored hashes stay valid: a table's unchanged rows open no version after the upgrade."""
    rows = [
        _row("a", 0.0),
        _row("b", 1.5),
        _row("c", math.nan),
        _row("d", math.inf),
        _row("e", -math.inf),
        _row("f", None),
        ("g", None, None, None, None, None),
        ("h", (None, None, None), [], {}, {"q": None}, (None, None)),
        ("i", (2.0, [None], None), [None, (3.0, None)], {"p": None}, {"q": [None, -1.0]}, (None, "x")),
    ]
    df = spark.createDataFrame(rows, NESTED)
    types = {f.name: f.dataType for f in df.schema.fields}
    pairs = df.select(row_hash(COLUMNS, types), _old_row_hash(COLUMNS)).collect()
    assert [new for new, _ in pairs] == [old for _, old in pairs]


FLOATS = st.sampled_from([0.0, -0.0, 1.5, -1.5, math.nan, math.inf, None])


def _positive_zeros(value: Any) -> Any:
    """``value`` with every -0.0 made 0.0 in Python, at any depth."""
    if isinstance(value, float):
        return value + 0.0
    if isinstance(value, tuple | list):
        return type(value)(_positive_zeros(v) for v in value)
    if isinstance(value, dict):
        return {k: _positive_zeros(v) for k, v in value.items()}
    return value


def _plain(value: Any) -> Any:
    """The reference: -0.0 is 0.0 and every NaN is one value, at any depth."""
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else value + 0.0
    if isinstance(value, tuple | list):
        return tuple(_plain(v) for v in value)
    if isinstance(value, dict):
        return tuple((k, _plain(v)) for k, v in value.items())
    return value


ROWS = st.lists(
    st.tuples(
        st.just("k"),
        st.none() | st.tuples(FLOATS, st.none() | st.lists(FLOATS, max_size=2), st.just("t")),
        st.none() | st.lists(st.none() | st.tuples(FLOATS, st.just("z")), max_size=2),
        st.none() | st.fixed_dictionaries({"p": FLOATS, "r": FLOATS}),
        st.none() | st.fixed_dictionaries({"q": st.none() | st.lists(FLOATS, max_size=2)}),
        st.just((1, "w")),
    ),
    min_size=2,
    max_size=8,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=ROWS)
def test_nested_hashes_agree_with_a_plain_python_reference(spark: SparkSession, rows: list[Any]) -> None:
    rows = rows + [_positive_zeros(r) for r in rows]
    hashes = _hashes(spark, rows)
    plain = [_plain(r) for r in rows]
    for i in range(len(rows)):
        for j in range(len(rows)):
            assert (hashes[i] == hashes[j]) == (plain[i] == plain[j]), (rows[i], rows[j])
