"""How the fields of a model's pydantic input and output become table columns (Spark SQL, Arrow).

One definition for batch scoring (output columns, input checks), the prediction log's warehouse table
and drift (numeric fields). ``X | None`` is X; a ``Literal`` or ``Enum`` whose values are all bool, all
int or all str is that type (the column holds the values, as the served JSON does).
"""

from __future__ import annotations

import enum
import types
import typing
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from thimble.modelops.errors import ModelOpsError

if TYPE_CHECKING:
    from pyspark.sql.types import DataType

# Python scalar -> Spark SQL type of its column.
SQL_TYPES: dict[Any, str] = {bool: "boolean", int: "bigint", float: "double", str: "string"}
# Python scalar -> the Spark SQL column types a table may hold for it as a model input.
COMPATIBLE_INPUTS: dict[Any, frozenset[str]] = {
    int: frozenset({"tinyint", "smallint", "int", "bigint"}),
    float: frozenset({"tinyint", "smallint", "int", "bigint", "float", "double", "decimal"}),
    bool: frozenset({"boolean"}),
    str: frozenset({"string"}),
}
NESTED_TYPES = (
    "bool, int, float, str, a Literal or Enum of those, X | None, list[X], dict[str, X] or a pydantic model"
)


def non_null_args(annotation: Any) -> list[Any]:
    """The types of ``annotation`` without ``None``: ``X | None`` -> ``[X]``; a plain type -> ``[it]``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


def scalar_type(annotation: Any) -> Any:
    """The Python type of a field's values: ``X | None`` -> X; ``Literal``/``Enum`` -> their values' type."""
    args = non_null_args(annotation)
    if len(args) != 1:
        return str
    tp = args[0]
    if typing.get_origin(tp) is typing.Literal:
        values: list[Any] = list(typing.get_args(tp))
    elif isinstance(tp, type) and issubclass(tp, enum.Enum):
        values = [member.value for member in tp]
    else:
        return tp
    kinds = {type(v) for v in values}
    return kinds.pop() if len(kinds) == 1 and kinds <= {bool, int, str} else tp


def is_enum(annotation: Any) -> bool:
    """Whether the field holds Enum members (their values go into the column)."""
    return any(isinstance(a, type) and issubclass(a, enum.Enum) for a in non_null_args(annotation))


def numeric_fields(model: type[BaseModel]) -> list[str]:
    """Fields whose annotation is int or float (optionally ``| None``): the ones drift is computed on."""
    out = []
    for name, info in model.model_fields.items():
        args = non_null_args(info.annotation)
        if len(args) == 1 and args[0] in (int, float):
            out.append(name)
    return out


def scalar_sql_type(annotation: Any) -> str:
    """The Spark SQL type of a scalar field (``bigint``); :class:`ModelOpsError` when it has none."""
    tp = scalar_type(annotation)
    if tp not in SQL_TYPES:
        raise ModelOpsError(
            f"output type {tp!r} cannot be a table column; use bool, int, float or str, "
            "or a Literal or Enum whose values are all bool, all int or all str"
        )
    return SQL_TYPES[tp]


def spark_type(annotation: Any) -> DataType:
    """The Spark (and so Arrow) type of a scalar field's column."""
    from pyspark.sql import types as T

    spark_types: dict[str, DataType] = {
        "boolean": T.BooleanType(),
        "bigint": T.LongType(),
        "double": T.DoubleType(),
        "string": T.StringType(),
    }
    return spark_types[scalar_sql_type(annotation)]


def sql_type(annotation: Any, where: str) -> str:
    """The Spark SQL type of any field: scalars as batch columns, lists, dicts and models nested.

    ``where`` names the field in the error (``inputs.tags[]``) when a type has no column type.
    """
    tp = scalar_type(annotation)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (list, set, frozenset) and len(args) == 1:
        return f"array<{sql_type(args[0], f'{where}[]')}>"
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return f"array<{sql_type(args[0], f'{where}[]')}>"
    if origin is dict and len(args) == 2 and args[0] is str:
        return f"map<string,{sql_type(args[1], f'{where}[]')}>"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return struct_sql_type(tp, where)
    try:
        return scalar_sql_type(annotation)
    except ModelOpsError:
        raise ModelOpsError(
            f"{where}: {getattr(tp, '__name__', tp)} has no warehouse column type; use {NESTED_TYPES}"
        ) from None


def struct_sql_type(model: type[BaseModel], where: str) -> str:
    """``struct<`a`:bigint,...>`` of a pydantic model, each field typed by :func:`sql_type`."""
    fields = []
    for name, info in model.model_fields.items():
        quoted = name.replace("`", "``")
        fields.append(f"`{quoted}`:{sql_type(info.annotation, f'{where}.{name}')}")
    return f"struct<{','.join(fields)}>"


def input_mismatch(annotation: Any, column_type: str) -> str | None:
    """Why a column of Spark SQL ``column_type`` cannot feed a field, or ``None`` when it can."""
    args = non_null_args(annotation)
    if len(args) != 1 or not isinstance(args[0], type):
        return None
    accepted = COMPATIBLE_INPUTS.get(args[0])
    if accepted is None or column_type in accepted:
        return None
    return f"is {column_type}; the model wants {args[0].__name__}"
