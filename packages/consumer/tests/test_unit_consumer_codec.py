"""Decoding and encoding of record values, keys and event times."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import orjson
import pytest
from pydantic import BaseModel, ValidationError

from thimble.consumer import App, Context, TestClient
from thimble.consumer._codec import (
    encode_key,
    encode_value,
    epoch_ms,
    make_decoder,
    outputs_of,
    record_fields,
)

pytestmark = pytest.mark.unit


class M(BaseModel):
    a: int
    when: datetime


def test_decoders() -> None:
    assert make_decoder(M)(b'{"a": 1, "when": "2026-01-01T00:00:00Z"}').a == 1
    with pytest.raises(ValidationError):
        make_decoder(M)(b'{"a": "x"}')
    assert make_decoder(dict)(b'{"k": [1]}') == {"k": [1]}
    with pytest.raises(orjson.JSONDecodeError):
        make_decoder(dict)(b"{")
    assert make_decoder(str)("é".encode()) == "é"
    with pytest.raises(UnicodeDecodeError):
        make_decoder(str)(b"\xff")
    assert make_decoder(bytes)(None) == b""
    assert make_decoder(int)(b"42") == 42
    assert make_decoder(Any)(b"[1]") == [1]
    with pytest.raises(ValueError, match="tombstone"):
        make_decoder(dict)(None)


def test_a_handler_typed_optional_takes_a_tombstone_as_none() -> None:
    app = App("compacted")

    @app.handler(source="clients", sink="changes")
    def change(client: M | None, ctx: Context) -> dict[str, Any]:
        return {"deleted": ctx.key_str} if client is None else {"a": client.a}

    @app.handler(source="batches", sink="batch-changes", batch_size=2)
    def changes(clients: list[M | None]) -> list[Any]:
        return [{"deleted": True} if c is None else {"a": c.a} for c in clients]

    with TestClient(app) as t:
        t.send("clients", None, key="c1")
        t.send("batches", None, key="c1")
        t.send("batches", {"a": 2, "when": "2026-01-01T00:00:00Z"}, key="c2")
        assert t.dead_letters() == []
        assert t.outputs("changes") == [{"deleted": "c1"}]
        assert t.outputs("batch-changes") == [{"deleted": True}, {"a": 2}]
    assert make_decoder(M | None)(b"null") is None
    with pytest.raises(ValueError, match="tombstone"):
        make_decoder(M)(None)  # a handler that cannot take it: the tombstone is dead-lettered


def test_encoders_and_outputs() -> None:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    assert orjson.loads(encode_value(M(a=1, when=when))) == {"a": 1, "when": "2026-01-01T00:00:00Z"}
    assert encode_value({"t": when}) == b'{"t":"2026-01-01T00:00:00Z"}'
    assert encode_value("x") == b"x"
    assert encode_value(b"y") == b"y"
    assert encode_key(7) == b"7"
    assert encode_key(None) is None
    assert outputs_of(None) == []
    assert outputs_of([1, None, 2]) == [1, 2]
    assert outputs_of(3) == [3]
    assert record_fields(M(a=1, when=when)) == {"a": 1, "when": when}
    with pytest.raises(TypeError, match="must be a pydantic model"):
        record_fields(3)


def test_event_times() -> None:
    expected = 1767225600000
    assert epoch_ms(datetime(2026, 1, 1, tzinfo=UTC)) == expected
    assert epoch_ms(datetime(2026, 1, 1)) == expected  # naive means UTC
    assert epoch_ms(date(2026, 1, 1)) == expected
    assert epoch_ms("2026-01-01T00:00:00+00:00") == expected
    assert epoch_ms(expected) == expected
    with pytest.raises(TypeError):
        epoch_ms(True)
