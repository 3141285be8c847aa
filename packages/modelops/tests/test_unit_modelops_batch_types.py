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


class _Tagged(BaseModel):
    id: int
    scores: list[float] = []


class _Count(BaseModel):
    n: int


def test_a_batch_of_arrow_rows_scores_the_valid_ones_and_says_why_the_others_are_not() -> None:
    import numpy as np
    import pandas as pd

    from thimble.modelops import ModelContext, model
    from thimble.modelops.batch import _score_valid

    @model(name="tagged")
    def rows_model(ctx: ModelContext, rows: list[_Tagged]) -> list[_Count]:
        return [_Count(n=len(r.scores)) for r in rows]

    @model(name="tagged-frame", input=_Tagged, output=_Count)
    def frame_model(ctx: ModelContext, df: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"n": [len(s) for s in df["scores"]]})

    pdf = pd.DataFrame(
        {  # as Arrow gives them: a null inside an array is NaN, a null id makes the column float
            "id": [1.0, np.nan, 3.0, 4.0],
            "scores": [np.array([0.5, 1.0]), np.array([1.0]), np.array([np.nan, 1.0]), None],
        }
    )
    for fn in (rows_model, frame_model):
        loaded = fn.bind()
        _, rejected = loaded.split_valid(pdf)
        assert rejected == {
            1: "id: Input should be a valid integer",
            2: "scores.0: Input should be a valid number",
            3: "scores: Input should be a valid list",
        }
        good, out = _score_valid(loaded, pdf)
        assert (good["id"].tolist(), out["n"].tolist()) == ([1.0], [2])
        _, none = _score_valid(loaded, pdf.iloc[[1]])
        assert (list(none.columns), len(none)) == (["n"], 0)
