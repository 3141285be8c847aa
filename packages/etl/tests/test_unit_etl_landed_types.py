"""Which type disagreements between landed files a read reconciles: a number's width only, at any depth."""

from __future__ import annotations

import pytest
from pyspark.sql import types as T

from thimble.etl.sources import _shown_path, _type_clash

pytestmark = pytest.mark.unit

BIGINT, INT, DOUBLE, FLOAT, TEXT = (
    T.LongType(),
    T.IntegerType(),
    T.DoubleType(),
    T.FloatType(),
    T.StringType(),
)


def row(**fields: T.DataType) -> T.StructType:
    return T.StructType([T.StructField(name, type_) for name, type_ in fields.items()])


@pytest.mark.parametrize(
    ("one", "other"),
    [
        (row(a=BIGINT), row(a=DOUBLE)),
        (row(a=INT, b=TEXT), row(A=FLOAT, c=T.DateType())),  # names compare without case; others add
        (row(a=row(q=BIGINT, r=TEXT)), row(a=row(q=DOUBLE))),
        (row(a=T.ArrayType(row(q=INT))), row(a=T.ArrayType(row(q=DOUBLE)))),
        (row(a=T.MapType(TEXT, BIGINT)), row(a=T.MapType(TEXT, DOUBLE))),
        (row(a=TEXT), row(b=BIGINT)),
    ],
)
def test_a_numbers_width_is_reconciled(one: T.StructType, other: T.StructType) -> None:
    assert _type_clash(one, other, ()) is None
    assert _type_clash(other, one, ()) is None


@pytest.mark.parametrize(
    ("one", "other", "path", "types"),
    [
        (row(a=TEXT), row(a=BIGINT), "a", ("string", "bigint")),
        (row(a=T.DecimalType(38, 18)), row(a=DOUBLE), "a", ("decimal(38,18)", "double")),
        (row(a=T.TimestampType()), row(a=TEXT), "a", ("timestamp", "string")),
        (row(a=row(q=BIGINT, r=TEXT)), row(a=row(r=INT)), "a.r", ("string", "int")),
        (row(a=T.ArrayType(row(q=TEXT))), row(a=T.ArrayType(row(q=INT))), "a[].q", ("string", "int")),
        (row(a=T.MapType(TEXT, BIGINT)), row(a=T.MapType(BIGINT, BIGINT)), "a{key}", ("string", "bigint")),
        (
            row(a=T.MapType(TEXT, row(v=T.DateType()))),
            row(a=T.MapType(TEXT, row(v=TEXT))),
            "a{value}.v",
            ("date", "string"),
        ),
        (row(a=T.ArrayType(BIGINT)), row(a=BIGINT), "a", ("array<bigint>", "bigint")),
    ],
)
def test_any_other_disagreement_names_the_field_and_both_types(
    one: T.StructType, other: T.StructType, path: str, types: tuple[str, str]
) -> None:
    clash = _type_clash(one, other, ())
    assert clash is not None
    assert (_shown_path(clash[0]), clash[1].simpleString(), clash[2].simpleString()) == (path, *types)
