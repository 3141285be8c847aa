"""Typed handlers against the real broker: decoding, context, outputs, keys, dead letters."""

from __future__ import annotations

import urllib.request
from datetime import datetime
from typing import Any

import pytest
from pydantic import BaseModel

from thimble.consumer import App, Context, DeadLetter, Output, Retriable
from thimble.testing import produce

from .conftest import make_settings

pytestmark = pytest.mark.integration


class Event(BaseModel):
    client_id: int
    kind: str
    amount: float
    ts: datetime


class Feature(BaseModel):
    client_id: int
    doubled: float
    offset: int


def test_typed_roundtrip_context_none_and_lists(kafka_topic, kafka_config, reader, start_app) -> None:
    src, dst = kafka_topic("src", partitions=2), kafka_topic("dst")
    app = App("roundtrip")

    @app.handler(source=src, sink=dst)
    def featurize(event: Event, ctx: Context) -> list[Feature] | Feature | None:
        if event.kind == "skip":
            return None
        feature = Feature(client_id=event.client_id, doubled=event.amount * 2, offset=ctx.offset)
        return [feature, feature] if event.kind == "twice" else feature

    produce(
        kafka_config,
        src,
        [
            (1, {"client_id": 1, "kind": "order", "amount": 2.5, "ts": "2026-01-01T00:00:00Z"}),
            (2, {"client_id": 2, "kind": "skip", "amount": 1, "ts": "2026-01-01T00:00:00Z"}),
            (3, {"client_id": 3, "kind": "twice", "amount": 1, "ts": "2026-01-01T00:00:00Z"}),
        ],
    )
    running = start_app(app, make_settings(kafka_config, src))
    out = reader(dst).wait_for(3)
    assert running.runner.metrics_server is not None
    metrics = urllib.request.urlopen(
        f"http://127.0.0.1:{running.runner.metrics_server.port}/metrics", timeout=5
    ).read()
    assert f'thimble_consumer_consumed_messages_total{{topic="{src}"}} 3.0'.encode() in metrics
    assert b'thimble_consumer_processed_messages_total{handler="featurize"} 3.0' in metrics
    ready = urllib.request.urlopen(f"http://127.0.0.1:{running.runner.metrics_server.port}/readyz", timeout=5)
    assert ready.status == 200
    values = sorted((orjson_loads(m.value())["client_id"], m.key()) for m in out)
    assert values == [(1, b"1"), (3, b"3"), (3, b"3")]
    assert {orjson_loads(m.value())["doubled"] for m in out} == {5.0, 2.0}


def orjson_loads(raw: bytes) -> Any:
    import orjson

    return orjson.loads(raw)


def test_dict_str_bytes_inputs_and_explicit_keys(kafka_topic, kafka_config, reader, start_app) -> None:
    a, b, c, dst = kafka_topic("a"), kafka_topic("b"), kafka_topic("c"), kafka_topic("dst")
    app = App("kinds")

    @app.handler(source=a, sink=dst)
    def on_dict(value: dict) -> dict:  # type: ignore[type-arg]
        return {"from": "dict", "n": value["n"]}

    @app.handler(source=b, sink=dst)
    def on_str(value: str) -> Output:
        return Output({"from": "str", "text": value.upper()}, key="k-str", headers={"h": "1"})

    @app.handler(source=c, sink=dst)
    def on_bytes(value: bytes) -> bytes:
        return value[::-1]

    produce(kafka_config, a, [(None, {"n": 7})])
    produce(kafka_config, b, [(None, b"hello")])
    produce(kafka_config, c, [(None, b"abc")])
    start_app(app, make_settings(kafka_config, dst))
    out = reader(dst).wait_for(3)
    by_value = {m.value(): m for m in out}
    assert b"cba" in by_value
    assert orjson_loads(next(v for v in by_value if b'"dict"' in v)) == {"from": "dict", "n": 7}
    str_msg = next(m for m in out if b'"str"' in m.value())
    assert str_msg.key() == b"k-str"
    assert ("h", b"1") in (str_msg.headers() or [])


def test_dead_letters_with_reasons(kafka_topic, kafka_config, reader, start_app) -> None:
    src, dst = kafka_topic("src"), kafka_topic("dst")
    app = App("dlq")
    attempts: dict[int, int] = {}

    @app.handler(source=src, sink=dst)
    def featurize(event: Event) -> Feature:
        attempts[event.client_id] = attempts.get(event.client_id, 0) + 1
        if event.client_id == 13:
            raise Retriable("feature store busy")
        if event.client_id == 66:
            raise ValueError("cannot featurize 66")
        return Feature(client_id=event.client_id, doubled=0, offset=0)

    good = {"kind": "k", "amount": 1, "ts": "2026-01-01T00:00:00Z"}
    produce(
        kafka_config,
        src,
        [
            (b"bad", b"{not json"),
            (b"invalid", {"client_id": "x", **{k: v for k, v in good.items()}}),
            (b"13", {"client_id": 13, **good}),
            (b"66", {"client_id": 66, **good}),
            (b"1", {"client_id": 1, **good}),
        ],
        headers=[("trace", b"t-1"), ("baggage", None)],
    )
    start_app(app, make_settings(kafka_config, src, max_retries=2))
    dead = reader(f"{src}.dlq").wait_for(4)
    assert len(reader(dst).wait_for(1)) == 1
    letters = {m.key(): DeadLetter.from_record(m.key(), m.value(), m.headers()) for m in dead}
    assert letters[b"bad"].error_stage == "decode"
    assert letters[b"bad"].value == b"{not json"
    assert (letters[b"bad"].headers["trace"], letters[b"bad"].headers["baggage"]) == (b"t-1", None)
    assert letters[b"invalid"].error_stage == "validate"
    assert "client_id" in letters[b"invalid"].error_message
    assert letters[b"13"].error_class == "thimble.consumer.errors.Retriable"
    assert letters[b"13"].attempts == 3
    assert attempts[13] == 3
    assert letters[b"66"].error_class == "ValueError"
    assert letters[b"66"].attempts == 1
    assert "cannot featurize 66" in letters[b"66"].traceback
    for letter in letters.values():
        assert letter.original_topic == src
        assert letter.original_partition == 0
        assert letter.headers["trace"] == b"t-1"
    assert sorted(d.original_offset for d in letters.values()) == [0, 1, 2, 3]
