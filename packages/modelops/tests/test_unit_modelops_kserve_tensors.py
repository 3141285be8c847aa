"""The Open Inference Protocol's input tensors: shape, datatype and data checked against each other and
against the model's input fields."""

from __future__ import annotations

import enum
from typing import Any

import pytest
from pydantic import BaseModel

from thimble.modelops._tensors import TensorError, advertised, field_kinds, tensor_rows

pytestmark = pytest.mark.unit


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Inputs(BaseModel):
    count: int
    amount: float
    active: bool
    tag: str | None = None
    level: Level = Level.LOW
    history: list[float] = []


KINDS = field_kinds(Inputs)


def _t(name: str, shape: Any, datatype: Any, data: Any) -> dict[str, Any]:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def _refused(inputs: Any) -> str:
    with pytest.raises(TensorError) as info:
        tensor_rows(inputs, KINDS)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_tensors_become_rows_from_flat_or_nested_data() -> None:
    rows = tensor_rows(
        [
            _t("count", [2], "INT32", [1, 2]),
            _t("amount", [2, 1], "FP64", [[1.5], [2]]),
            _t("active", [2, 1], "BOOL", [True, False]),
            _t("tag", [2], "BYTES", ["a", "b"]),
            _t("history", [2, 3], "FP32", [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
            _t("level", [2], "UINT8", [1, 2]),
        ],
        KINDS,
    )
    assert rows == [
        {"count": 1, "amount": 1.5, "active": True, "tag": "a", "history": [1.0, 2.0, 3.0], "level": 1},
        {"count": 2, "amount": 2, "active": False, "tag": "b", "history": [4.0, 5.0, 6.0], "level": 2},
    ]
    nested = tensor_rows([_t("history", [1, 2], "FP64", [[0.5, 1]])], KINDS)
    assert nested == [{"history": [0.5, 1]}]
    # a name the model does not know passes through for the model's validation to judge
    assert tensor_rows([_t("other", [2, 2], "INT64", [[1, 2], [3, 4]])], KINDS) == [
        {"other": [1, 2]},
        {"other": [3, 4]},
    ]


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        ([], "non-empty 'inputs'"),
        ("x", "non-empty 'inputs'"),
        ([{"shape": [1], "datatype": "INT64", "data": [1]}], "input 0 needs a string 'name'"),
        ([_t("count", [5], "INT64", [1])], "shape [5] and 1 values that do not match it"),
        ([_t("count", "x", 5, [1])], "'shape' must be a list of 1 to 32 non-negative integers, not 'x'"),
        ([_t("count", [-1], "INT64", [1])], "non-negative integers, not [-1]"),
        ([_t("count", [1.0], "INT64", [1])], "non-negative integers"),
        ([_t("count", [True], "INT64", [1])], "non-negative integers"),
        ([_t("count", [], "INT64", [1])], "non-negative integers"),
        ([_t("count", [1] * 33, "INT64", [1])], "1 to 32"),
        ([_t("count", [0], "INT64", [])], "needs at least one row"),
        ([_t("count", [1], 5, [1])], "'datatype' 5 is not one of BOOL, INT8"),
        ([_t("count", [1], "int64", [1])], "'datatype' 'int64' is not one of"),
        ([_t("count", [1], "INT64", "1")], "'data' must be a list, not '1'"),
        ([_t("other", [1], "BOOL", [1])], "is BOOL: its data must be booleans, not 1"),
        ([_t("other", [1], "INT64", [True])], "is INT64: its data must be integers, not True"),
        ([_t("other", [1], "INT64", [1.5])], "must be integers, not 1.5"),
        ([_t("other", [1], "FP64", ["1.5"])], "is FP64: its data must be numbers, not '1.5'"),
        ([_t("other", [1], "FP64", [None])], "must be numbers, not None"),
        ([_t("other", [1], "BYTES", [1])], "is BYTES: its data must be strings, not 1"),
        ([_t("other", [2], "INT8", [1, 128])], "is INT8: 128 is out of its range"),
        ([_t("other", [1], "UINT64", [-1])], "is UINT64: -1 is out of its range"),
        ([_t("other", [1], "INT64", [2**63])], "out of its range"),
        ([_t("other", [1], "FP16", [70000.0])], "is FP16: 70000.0 is out of its range"),
        ([_t("other", [1], "FP64", [10**400])], "out of its range"),
        ([_t("other", [2, 2], "INT64", [[1, 2], [3]])], "nested data that do not match it"),
        ([_t("other", [3], "INT64", [[1, 2], [3]])], "nested data that do not match it"),
        ([_t("other", [2, 1], "INT64", [[1], 2])], "nested data that do not match it"),
        ([_t("other", [1, 2], "INT64", [[1, [2]]])], "nested data that do not match it"),
        ([_t("count", [1], "FP64", [1.0])], "input 'count' is FP64; the model's field takes INT8"),
        ([_t("count", [1], "BOOL", [True])], "input 'count' is BOOL; the model's field takes INT8"),
        ([_t("active", [1], "INT64", [1])], "input 'active' is INT64; the model's field takes BOOL"),
        ([_t("tag", [1], "INT64", [1])], "the model's field takes BYTES"),
        ([_t("amount", [1], "BYTES", ["1"])], "the model's field takes INT8, INT16"),
        ([_t("level", [1], "BYTES", ["LOW"])], "input 'level' is BYTES; the model's field takes INT8"),
        ([_t("count", [2, 2], "INT64", [1, 2, 3, 4])], "takes one value per row: give shape [2] or [2, 1]"),
        ([_t("history", [2], "FP64", [1.0, 2.0])], "takes a list per row"),
        (
            [_t("count", [1], "INT64", [1]), _t("count", [1], "INT64", [2])],
            "input 'count' is given twice",
        ),
        (
            [_t("count", [1], "INT64", [1]), _t("amount", [2], "FP64", [1.0, 2.0])],
            "input 'amount' has 2 rows (shape[0]) and input 'count' has 1: every input needs the same",
        ),
    ],
)
def test_a_tensor_that_breaks_the_protocol_or_the_model_input_is_refused_naming_it(
    inputs: Any, expected: str
) -> None:
    assert expected in _refused(inputs)


def test_messages_cut_what_the_request_sent() -> None:
    long = "n" * 5000
    for inputs in (
        [_t(long, [1], "INT64", [1]), _t(long, [1], "INT64", [1])],
        [_t("count", [1], "INT64", [1]), _t(long, [2], "INT64", [1, 2])],
        [_t(long, [1], long, [1])],
        [_t(long, [10**100] * 30, "INT64", [1])],
        [_t("other", [1], "BYTES", [[long]])],
        [_t("other", [1], "INT64", [long])],
    ):
        message = _refused(inputs)
        assert len(message) < 400, message
        assert "n" * 61 not in message


def test_field_kinds_follow_the_input_schema_and_say_what_metadata_advertises() -> None:
    assert {name: advertised(kind) for name, kind in KINDS.items()} == {
        "count": ("INT64", [-1]),
        "amount": ("FP64", [-1]),
        "active": ("BOOL", [-1]),
        "tag": ("BYTES", [-1]),
        "level": ("INT64", [-1]),
        "history": ("FP64", [-1, -1]),
    }
    assert field_kinds(Inputs) is KINDS  # computed once per input type
