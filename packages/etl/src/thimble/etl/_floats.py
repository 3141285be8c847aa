"""-0.0 made 0.0 at any depth of a value: so values that compare equal (a merge's ``<=>``,
``count(DISTINCT ...)``) hash and count alike, though their JSON or text differs."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import Column
    from pyspark.sql.types import DataType


def holds_float(kind: DataType) -> bool:
    """Whether a value of ``kind`` may hold a ``float`` or ``double`` (a map's keys aside)."""
    from pyspark.sql import types as T

    if isinstance(kind, T.ArrayType):
        return holds_float(kind.elementType)
    if isinstance(kind, T.MapType):
        return holds_float(kind.valueType)
    if isinstance(kind, T.StructType):
        return any(holds_float(f.dataType) for f in kind.fields)
    return isinstance(kind, T.FloatType | T.DoubleType)


def zero_signed(column: Column, kind: DataType) -> Column:
    """``column`` (of ``kind``) with every -0.0 made 0.0: ``x + 0.0`` (IEEE makes -0.0 + 0.0 positive and
    changes no other value; a NaN stays NaN, a null null), through structs (rebuilt with the same field
    names; a null struct stays null), arrays (``transform``) and map values (``transform_values``). A map's
    keys are left as they are. Parts without a float are not touched, so their JSON is unchanged."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    if not holds_float(kind):
        return column
    if isinstance(kind, T.ArrayType):
        return F.transform(column, lambda x: zero_signed(x, kind.elementType))
    if isinstance(kind, T.MapType):
        return F.transform_values(column, lambda _, v: zero_signed(v, kind.valueType))
    if isinstance(kind, T.StructType):
        fields = [zero_signed(column.getField(f.name), f.dataType).alias(f.name) for f in kind.fields]
        return F.when(column.isNotNull(), F.struct(*fields))
    return column + F.lit(0).cast(kind)
