"""How ``tail`` shows a record: every header in order, every byte faithfully, nothing a terminal acts on."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from confluent_kafka import Message

from thimble.consumer._tail import record_doc, record_line, shown_bytes

pytestmark = pytest.mark.unit


def message(
    value: bytes | None = b"{}",
    key: bytes | None = None,
    headers: list[tuple[str, bytes | None]] | None = None,
) -> Message:
    return Message(topic="t", partition=0, offset=7, key=key, value=value, headers=headers)


def line_of(msg: Message) -> dict[str, Any]:
    line = record_line(msg)
    assert "\n" not in line
    return dict(orjson.loads(line))


def test_every_header_is_shown_in_order_duplicates_included() -> None:
    headers = [("h", b"1"), ("x", b"2"), ("h", b"3"), ("h", b"1")]
    assert line_of(message(headers=headers))["headers"] == [
        {"name": "h", "value": "1"},
        {"name": "x", "value": "2"},
        {"name": "h", "value": "3"},
        {"name": "h", "value": "1"},
    ]


def test_a_null_header_is_not_an_empty_one() -> None:
    shown = line_of(message(headers=[("h", None), ("h", b"")]))["headers"]
    assert shown == [{"name": "h", "value": None}, {"name": "h", "value": ""}]


def test_bytes_that_are_not_utf8_are_shown_in_base64_for_key_value_and_headers() -> None:
    raw = b"\xff\xfe ok \xc3"
    doc = line_of(message(value=raw, key=raw, headers=[("h", raw), ("h", b"\xef\xbf\xbd")]))
    assert base64.b64decode(doc["key_base64"]) == raw
    assert base64.b64decode(doc["value_base64"]) == raw
    assert {"key", "value"}.isdisjoint(doc)
    first, second = doc["headers"]
    assert first == {"name": "h", "value_base64": base64.b64encode(raw).decode()}
    assert second == {"name": "h", "value": "\ufffd"}  # a real U+FFFD stays text, unlike a bad byte


def test_one_rule_for_bytes() -> None:
    assert shown_bytes("key", None) == {"key": None}
    assert shown_bytes("key", b"") == {"key": ""}
    assert shown_bytes("key", "é".encode()) == {"key": "é"}
    assert shown_bytes("key", b"\x80") == {"key_base64": "gA=="}


def test_values_json_parsed_text_empty_and_tombstone() -> None:
    assert record_doc(message(value=b'{"id": 1}'))["value"] == {"id": 1}
    assert record_doc(message(value=b"{truncated"))["value"] == "{truncated"
    assert record_doc(message(value=b""))["value"] == ""
    assert record_doc(message(value=None))["value"] is None
    doc = record_doc(message(value=b"v", key=b"k"))
    assert list(doc) == ["partition", "offset", "key", "headers", "value"]
    assert (doc["partition"], doc["offset"], doc["key"]) == (0, 7, "k")


HOSTILE = [
    "\x1b[2J\x1b[31mred",  # clear the screen, colour
    "a\nfake line",
    "a\rover",
    "\u202eevil",  # right-to-left override
    "\u2066isolate\u2069",
    "a\u2028b\u2029c",
    "\x9b31m",  # C1 CSI
    "\x85next",  # C1 NEL
    "del\x7f",
    "[bold]markup[/bold]",
]


SHOWN = {  # where a text from the record goes: the record, and where tail shows the text
    "key": (lambda t: message(key=t.encode()), lambda d: d["key"]),
    "text value": (lambda t: message(value=t.encode()), lambda d: d["value"]),
    "json value": (lambda t: message(value=orjson.dumps({"k": t})), lambda d: d["value"]["k"]),
    "header name": (lambda t: message(headers=[(t, b"v")]), lambda d: d["headers"][0]["name"]),
    "header value": (lambda t: message(headers=[("h", t.encode())]), lambda d: d["headers"][0]["value"]),
}


@pytest.mark.parametrize("text", HOSTILE)
@pytest.mark.parametrize("where", list(SHOWN))
def test_nothing_from_the_record_reaches_the_terminal_raw(where: str, text: str) -> None:
    build, shown = SHOWN[where]
    line = record_line(build(text))
    assert all(c.isprintable() for c in line), ascii(line)  # no control, separator or bidi character
    assert shown(orjson.loads(line)) == text  # escaped for the terminal, the same text for a parser
