"""How ``tail`` shows a record: one JSON line, every byte and header kept, nothing a terminal acts on."""

from __future__ import annotations

import base64
from typing import Any

import orjson
from confluent_kafka import Message

from thimble.common.text import TERMINAL_CONTROLS

# What a terminal acts on that JSON encoders leave raw (orjson escapes only C0), written as JSON ``\uXXXX``
# escapes, so the line still decodes to exactly the same text.
_TERMINAL_ESCAPES = {c: f"\\u{c:04x}" for c in TERMINAL_CONTROLS if c >= 0x20}


def shown_bytes(field: str, data: bytes | str | None) -> dict[str, str | None]:
    """``{field: text}`` for UTF-8 bytes (``None`` as null), else ``{field + "_base64": ...}``.

    The one rule for the key, a value that is not JSON, and each header value.
    """
    if data is None or isinstance(data, str):
        return {field: data}
    try:
        return {field: data.decode()}
    except UnicodeDecodeError:
        return {f"{field}_base64": base64.b64encode(data).decode("ascii")}


def record_doc(msg: Message) -> dict[str, Any]:
    """The record as ``tail`` prints it: the value parsed when it is JSON, headers in order, duplicates kept."""
    value = msg.value()
    shown_value: dict[str, Any]
    try:
        shown_value = {"value": None if value is None else orjson.loads(value)}
    except orjson.JSONDecodeError:
        shown_value = shown_bytes("value", value)
    headers = msg.headers() or []  # a list from a consumer; a dict only if a Message was built with one
    return {
        "partition": msg.partition(),
        "offset": msg.offset(),
        **shown_bytes("key", msg.key()),
        "headers": [
            {"name": name, **shown_bytes("value", data)}
            for name, data in (headers.items() if isinstance(headers, dict) else headers)
        ],
        **shown_value,
    }


def record_line(msg: Message) -> str:
    """:func:`record_doc` as one JSON line (no newline) that is safe to print to a terminal."""
    return orjson.dumps(record_doc(msg)).decode().translate(_TERMINAL_ESCAPES)
