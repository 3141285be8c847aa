"""Input tensors of the Open Inference Protocol (KServe V2), checked and turned into the model's rows.

A tensor is ``{"name", "shape", "datatype", "data"}``: ``shape`` lists non-negative dimensions, the
first of which is the number of rows; ``data`` holds ``prod(shape)`` elements in row-major order, flat or
nested exactly as ``shape`` says; ``datatype`` is one of the protocol's names and says what the elements
are (BOOL: JSON booleans, INT*/UINT*: integers in the type's range, FP*: numbers, BYTES: strings). It must
also suit the model's input field of that name (an ``int`` field takes INT*/UINT*, a ``float`` field any
number type, a ``bool`` BOOL, a ``str`` BYTES). Each input is given once, and all have the same number of
rows. A row's value is its one element (shape ``[n]`` or ``[n, 1]``), or, for a list field, the row's
elements nested as the rest of the shape.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

from pydantic import BaseModel

from thimble.modelops._names import shown

_INTEGERS = {
    "INT8": (-(2**7), 2**7 - 1),
    "INT16": (-(2**15), 2**15 - 1),
    "INT32": (-(2**31), 2**31 - 1),
    "INT64": (-(2**63), 2**63 - 1),
    "UINT8": (0, 2**8 - 1),
    "UINT16": (0, 2**16 - 1),
    "UINT32": (0, 2**32 - 1),
    "UINT64": (0, 2**64 - 1),
}
_FLOATS = {"FP16": 65504.0, "FP32": 3.4028234663852886e38, "FP64": 1.7976931348623157e308}
DATATYPES = ("BOOL", *_INTEGERS, *_FLOATS, "BYTES")
MAX_DIMENSIONS = 32
_SUITS = {  # the datatypes each JSON Schema type of a model field takes
    "integer": frozenset(_INTEGERS),
    "number": frozenset(_INTEGERS) | frozenset(_FLOATS),
    "boolean": frozenset({"BOOL"}),
    "string": frozenset({"BYTES"}),
}
_NAMES = {"BOOL": "booleans", "BYTES": "strings"}


class TensorError(ValueError):
    """An input tensor the protocol (or the model's input) does not allow; the message names the input."""


@dataclass(frozen=True, slots=True)
class FieldKind:
    """What a model input field holds: the JSON Schema type of its values (``None``: not one type) and
    how deep in lists they are."""

    type: str | None
    depth: int


_UNKNOWN = FieldKind(None, 0)
_KINDS: WeakKeyDictionary[type[BaseModel], dict[str, FieldKind]] = WeakKeyDictionary()


def field_kinds(input_type: type[BaseModel]) -> dict[str, FieldKind]:
    """The kind of each input field of a model, from its JSON schema (computed once per input type)."""
    kinds = _KINDS.get(input_type)
    if kinds is None:
        schema = input_type.model_json_schema()
        defs = schema.get("$defs", {})
        kinds = _KINDS[input_type] = {
            name: _kind(prop, defs, 0) for name, prop in schema.get("properties", {}).items()
        }
    return kinds


def _kind(prop: dict[str, Any], defs: dict[str, Any], depth: int) -> FieldKind:
    if depth > MAX_DIMENSIONS:
        return _UNKNOWN
    prop = _resolved(prop, defs)
    options = [_resolved(p, defs) for p in prop.get("anyOf", [prop])]
    options = [p for p in options if p.get("type") != "null"]
    if len(options) != 1:
        return _UNKNOWN
    only = options[0]
    kind = only.get("type")
    if kind == "array":
        inner = _kind(only.get("items", {}), defs, depth + 1)
        return FieldKind(inner.type, inner.depth + 1)
    if kind is None and "enum" in only:  # an Enum's values
        types = {_json_type(v) for v in only["enum"]}
        kind = types.pop() if len(types) == 1 else None
    return FieldKind(kind, 0) if kind in _SUITS else _UNKNOWN


def _resolved(prop: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = prop.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        found: dict[str, Any] = defs.get(ref.removeprefix("#/$defs/"), {})
        return found
    return prop


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    return "number" if isinstance(value, float) else "string"


def advertised(kind: FieldKind) -> tuple[str, list[int]]:
    """The datatype and shape ``/v2/models/{name}`` shows for a field of this kind."""
    datatype = {"integer": "INT64", "number": "FP64", "boolean": "BOOL"}.get(kind.type or "", "BYTES")
    return datatype, [-1] * (1 + kind.depth)


def tensor_rows(inputs: Any, kinds: dict[str, FieldKind]) -> list[dict[str, Any]]:
    """The rows the ``inputs`` of an ``/infer`` body hold; :class:`TensorError` for the first input that
    breaks a rule of the protocol or does not suit the model's field of that name."""
    if not isinstance(inputs, list) or not inputs:
        raise TensorError("the body must be an object with a non-empty 'inputs' list of tensors")
    columns: dict[str, list[Any]] = {}
    first: tuple[str, int] | None = None
    for position, tensor in enumerate(inputs):
        name, rows, values = _column(position, tensor, kinds)
        if name in columns:
            raise TensorError(f"input {shown(name)} is given twice; give each input once")
        if first is None:
            first = (name, rows)
        elif rows != first[1]:
            raise TensorError(
                f"input {shown(name)} has {rows} rows (shape[0]) and input {shown(first[0])} has "
                f"{first[1]}: every input needs the same number of rows"
            )
        columns[name] = values
    assert first is not None
    names = list(columns)
    return [{name: columns[name][i] for name in names} for i in range(first[1])]


def _column(position: int, tensor: Any, kinds: dict[str, FieldKind]) -> tuple[str, int, list[Any]]:
    """One tensor's name, number of rows and the value of each row."""
    if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
        raise TensorError(f"input {position} needs a string 'name' (and 'shape', 'datatype', 'data')")
    name: str = tensor["name"]
    label = f"input {shown(name)}"
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= MAX_DIMENSIONS
        or not all(type(d) is int and d >= 0 for d in shape)
    ):
        raise TensorError(
            f"{label}: 'shape' must be a list of 1 to {MAX_DIMENSIONS} non-negative integers, "
            f"not {shown(shape)}"
        )
    if shape[0] == 0:
        raise TensorError(f"{label} has shape {shown(shape)}: it needs at least one row")
    datatype = tensor.get("datatype")
    if datatype not in DATATYPES:
        raise TensorError(f"{label}: 'datatype' {shown(datatype)} is not one of {', '.join(DATATYPES)}")
    kind = kinds.get(name, _UNKNOWN)
    if kind.type is not None and datatype not in _SUITS[kind.type]:
        suits = ", ".join(d for d in DATATYPES if d in _SUITS[kind.type])
        raise TensorError(f"{label} is {datatype}; the model's field takes {suits}")
    data = tensor.get("data")
    if not isinstance(data, list):
        raise TensorError(f"{label}: 'data' must be a list, not {shown(data)}")
    nested = any(type(x) is list for x in data)
    flat = _flattened(data, shape) if nested else data
    if flat is None or len(flat) != math.prod(shape):
        got = f"{len(data)} values" if not nested else "nested data"
        raise TensorError(
            f"{label} has shape {shown(shape)} and {got} that do not match it: give {shown(math.prod(shape))} "
            "values, flat in row-major order or nested as the shape"
        )
    _check_elements(label, datatype, flat)
    rows = shape[0]
    per_row = math.prod(shape[1:])
    if per_row == 1 and kind.depth == 0:
        return name, rows, flat
    if kind.depth == 0 and kind.type is not None:
        raise TensorError(
            f"{label} has shape {shown(shape)}; the model's field takes one value per row: "
            f"give shape [{rows}] or [{rows}, 1]"
        )
    if kind.type is not None and len(shape) != 1 + kind.depth:
        raise TensorError(
            f"{label} has shape {shown(shape)}; the model's field takes a list"
            f"{' of lists' * (kind.depth - 1)} per row: give a shape of {1 + kind.depth} dimensions"
        )
    if len(shape) == 1:
        return name, rows, flat
    if nested:
        return name, rows, data
    return name, rows, [_nest(flat[i * per_row : (i + 1) * per_row], shape[1:]) for i in range(rows)]


def _flattened(data: list[Any], shape: list[int]) -> list[Any] | None:
    """Nested ``data`` as a flat list, when it is nested exactly as ``shape`` (else ``None``)."""
    flat: list[Any] = []
    level: list[Any] = [data]
    for depth, size in enumerate(shape):
        last = depth == len(shape) - 1
        below: list[Any] = []
        for part in level:
            if type(part) is not list or len(part) != size:
                return None
            if last:
                if any(type(x) is list for x in part):
                    return None
                flat.extend(part)
            else:
                below.extend(part)
        level = below
    return flat


def _nest(flat: list[Any], dims: list[int]) -> list[Any]:
    if len(dims) == 1:
        return flat
    size = math.prod(dims[1:])
    return [_nest(flat[i * size : (i + 1) * size], dims[1:]) for i in range(dims[0])]


def _check_elements(label: str, datatype: str, flat: list[Any]) -> None:
    """Every element is of ``datatype`` (and within its range)."""
    is_ok: Callable[[Any], bool]
    if datatype == "BOOL":
        is_ok = _is_bool
    elif datatype == "BYTES":
        is_ok = _is_str
    elif datatype in _INTEGERS:
        is_ok = _is_int
    else:
        is_ok = _is_number
    if not all(map(is_ok, flat)):
        bad = next(x for x in flat if not is_ok(x))
        what = _NAMES.get(datatype, "integers" if datatype in _INTEGERS else "numbers")
        raise TensorError(f"{label} is {datatype}: its data must be {what}, not {shown(bad)}")
    if not flat or datatype in ("BOOL", "BYTES"):
        return
    low, high = _INTEGERS.get(datatype) or (-_FLOATS[datatype], _FLOATS[datatype])
    if min(flat) < low or max(flat) > high:
        bad = next(x for x in flat if not low <= x <= high)
        raise TensorError(f"{label} is {datatype}: {shown(bad)} is out of its range")


def _is_bool(x: Any) -> bool:
    return type(x) is bool


def _is_str(x: Any) -> bool:
    return type(x) is str


def _is_int(x: Any) -> bool:
    return type(x) is int


def _is_number(x: Any) -> bool:
    return type(x) is float or type(x) is int
