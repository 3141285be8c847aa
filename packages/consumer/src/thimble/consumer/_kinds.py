"""How an error message names the kind of a value read from JSON or YAML: one spelling everywhere."""

from __future__ import annotations

from typing import Any

_JSON_KINDS: dict[type, str] = {
    type(None): "null",
    bool: "a bool",
    str: "a string",
    int: "a number",
    float: "a number",
    dict: "an object",
    list: "an array",
}


def json_kind(value: Any) -> str:
    """What a parsed JSON (or YAML) value is, for an error message: ``null``, ``a bool``, ``an object``..."""
    return _JSON_KINDS.get(type(value)) or f"a {type(value).__name__}"
