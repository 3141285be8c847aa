from __future__ import annotations

from enum import Enum, IntEnum
from typing import Literal

import pytest
from pydantic import BaseModel

from thimble.modelops import ModelOpsError
from thimble.modelops._column_types import numeric_fields, spark_type, sql_type, struct_sql_type

pytestmark = pytest.mark.unit


class Colour(Enum):
    RED = "red"
    BLUE = "blue"


class Level(IntEnum):
    LOW = 1


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        (Literal["low", "high"], "string"),
        (Literal[1, 2] | None, "bigint"),
        (Literal[True, False], "boolean"),
        (Colour, "string"),
        (Level | None, "bigint"),
        (float, "double"),
    ],
)
def test_literal_and_enum_outputs_map_to_column_types(annotation: object, expected: str) -> None:
    assert spark_type(annotation).simpleString() == expected


@pytest.mark.parametrize("annotation", [Literal["a", 1], Literal[1, True], list[int]])
def test_outputs_without_one_column_type_are_refused(annotation: object) -> None:
    with pytest.raises(ModelOpsError, match="cannot be a table column"):
        spark_type(annotation)


class Inner(BaseModel):
    score: float | None
    level: Level


class Row(BaseModel):
    id: int
    flag: bool
    amount: float | None = None
    tags: list[str]
    nested: dict[str, list[Inner]]


def test_nested_fields_map_to_one_sql_type_and_numbers_are_found() -> None:
    assert struct_sql_type(Row, "input") == (
        "struct<`id`:bigint,`flag`:boolean,`amount`:double,`tags`:array<string>,"
        "`nested`:map<string,array<struct<`score`:double,`level`:bigint>>>>"
    )
    assert numeric_fields(Row) == ["id", "amount"]
    with pytest.raises(ModelOpsError, match=r"input\.when\[\]: bytes has no warehouse column type"):
        sql_type(list[bytes], "input.when")
