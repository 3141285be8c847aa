from __future__ import annotations

from enum import Enum, IntEnum
from typing import Literal

import pytest

from thimble.modelops import ModelOpsError
from thimble.modelops._column_types import spark_type

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
