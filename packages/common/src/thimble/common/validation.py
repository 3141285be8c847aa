"""Turn pydantic validation errors into one readable line per problem, with did-you-mean hints."""

from __future__ import annotations

import difflib
import json
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from thimble.common.text import cut

SHOWN_KEY = 100  # a key in a problem's location: room for any field name a model declares
SHOWN_MESSAGE = 300  # a problem's message, which may quote the input (a custom validator's, a union tag)


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


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest choice, or ``""`` when none is close."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{match[0]}'?" if match else ""


def format_location(loc: Sequence[int | str]) -> str:
    """``("journal", "keys", 0)`` -> ``journal.keys[0]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _model_at(model: type[BaseModel] | None, loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The pydantic model whose fields sit at ``loc`` inside ``model``, if it can be told."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(part)
        if field is None:
            return None
        current = _unwrap(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    args = getattr(annotation, "__args__", None)
    if isinstance(annotation, type):
        return annotation
    for arg in args or ():
        found = _unwrap(arg)
        if isinstance(found, type) and issubclass(found, BaseModel):
            return found
    return annotation


def validation_problems(
    error: ValidationError, model: type[BaseModel] | None = None, top_level_names: Iterable[str] = ()
) -> list[str]:
    """One line per problem: ``path: reason``; unknown keys get a did-you-mean suggestion.

    ``top_level_names`` are further valid top-level keys to suggest (sections handled elsewhere). Keys and
    messages come from outside (a file's keys, a dict's keys, a quoted value): they are shown cut and escaped.
    """
    problems = []
    for item in error.errors(include_url=False, include_context=False, include_input=False):
        loc = item["loc"]
        where = format_location(shown_location(loc))
        if item["type"] == "extra_forbidden":
            parent = _model_at(model, loc[:-1])
            names = [*parent.model_fields, *(top_level_names if len(loc) == 1 else ())] if parent else []
            hint = did_you_mean(str(loc[-1]), names)
            problems.append(f"{where}: unknown key{hint}")
        else:
            problems.append(f"{where}: {cut(str(item['msg']), SHOWN_MESSAGE).removeprefix('Value error, ')}")
    return problems


def shown_location(loc: Sequence[int | str]) -> list[int | str]:
    """A problem's location with each key cut and escaped (:data:`SHOWN_KEY`)."""
    return [part if isinstance(part, int) else cut(str(part), SHOWN_KEY) for part in loc]


def environment_problems(
    model: type[BaseModel], environ: Mapping[str, str], prefix: str = "THIMBLE_", delimiter: str = "__"
) -> list[str]:
    """One line per environment variable whose value must be JSON (a list or mapping) and is not.

    Settings loaders report such a value without naming the variable; this names it.
    """
    problems = []
    for name, value in sorted(environ.items()):
        if not name.upper().startswith(prefix):
            continue
        path = name[len(prefix) :].lower().split(delimiter)
        annotation = _annotation_at(model, path)
        if annotation is None or not _is_complex(annotation):
            continue
        try:
            json.loads(value)
        except json.JSONDecodeError as exc:
            problems.append(
                f"{name}: not valid JSON ({exc.msg}); write a list as "
                '\'["a", "b"]\' and a mapping as \'{"key": "value"}\''
            )
    return problems


def _annotation_at(model: type[BaseModel], path: Sequence[str]) -> Any:
    current: Any = model
    for part in path:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(part)
        if field is None:
            return None
        current = _unwrap(field.annotation)
    return current


def _is_complex(annotation: Any) -> bool:
    origin = typing.get_origin(annotation) or annotation
    if origin in (typing.Union, types.UnionType):
        return any(_is_complex(arg) for arg in typing.get_args(annotation))
    return origin in (list, dict, tuple, set, frozenset) or (
        isinstance(origin, type) and issubclass(origin, BaseModel)
    )
