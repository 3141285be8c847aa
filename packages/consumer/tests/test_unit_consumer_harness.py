"""The in-memory harness: same decoding, outputs, sinks and dead letters as production."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd
import pytest
from pydantic import BaseModel

from thimble.consumer import (
    App,
    ConsumerError,
    Context,
    Landing,
    OnlineStore,
    Output,
    Retriable,
    TestClient,
)

pytestmark = pytest.mark.unit


class ClientEvent(BaseModel):
    client_id: int
    kind: str
    amount: float
    ts: datetime


class ClientFeatures(BaseModel):
    client_id: int
    spend: float
    ts: datetime


def make_app() -> tuple[App, dict[str, int]]:
    app = App("client-features")
    calls: dict[str, int] = {}

    @app.handler(
        source="client-events",
        sink=[
            "client-features",
            OnlineStore("client-features", entity_key="client_id", event_time="ts"),
            Landing("client_features", event_time="ts"),
        ],
    )
    def featurize(event: ClientEvent, ctx: Context) -> ClientFeatures | list[ClientFeatures] | None:
        calls[event.kind] = calls.get(event.kind, 0) + 1
        if event.kind == "flaky":
            raise Retriable("try later")
        if event.kind == "bug":
            raise KeyError("boom")
        if event.kind == "ignore":
            return None
        features = ClientFeatures(client_id=event.client_id, spend=event.amount, ts=event.ts)
        return [features, features] if event.kind == "double" else features

    return app, calls


def ev(
    client_id: int, kind: str = "order", amount: float = 1.0, ts: str = "2026-01-01T00:00:00Z"
) -> dict[str, Any]:
    return {"client_id": client_id, "kind": kind, "amount": amount, "ts": ts}


def test_outputs_keys_and_counts() -> None:
    app, _ = make_app()
    with TestClient(app) as t:
        t.send("client-events", ev(1), key="1")
        t.send("client-events", ev(2, "ignore"), key="2")
        t.send("client-events", ev(3, "double"), key="3")
        assert [o["client_id"] for o in t.outputs("client-features")] == [1, 3, 3]
        assert [r.key for r in t.records("client-features")] == [b"1", b"3", b"3"]
        assert t.outputs("client-features")[0] == {"client_id": 1, "spend": 1.0, "ts": "2026-01-01T00:00:00Z"}


def test_dead_letters_retries_and_reasons() -> None:
    app, calls = make_app()
    with TestClient(app) as t:
        t.send("client-events", b"{oops", key="a")
        t.send("client-events", {"client_id": "nope"}, key="b")
        t.send("client-events", ev(5, "flaky"), key="c")
        t.send("client-events", ev(6, "bug"), key="d")
        letters = {d.key: d for d in t.dead_letters("client-events")}
    assert letters[b"a"].error_stage == "decode"
    assert letters[b"a"].value == b"{oops"
    assert letters[b"b"].error_stage == "validate"
    assert letters[b"c"].error_stage == "handler"
    assert letters[b"c"].attempts == 4
    assert calls["flaky"] == 4
    assert letters[b"d"].attempts == 1
    assert letters[b"d"].error_class == "KeyError"
    assert {d.original_offset for d in letters.values()} == {0, 1, 2, 3}
    assert "KeyError" in letters[b"d"].traceback


def test_online_store_latest_event_time_wins() -> None:
    app, _ = make_app()
    with TestClient(app) as t:
        t.send("client-events", ev(9, amount=2, ts="2026-01-02T00:00:00Z"))
        t.send("client-events", ev(9, amount=1, ts="2026-01-01T00:00:00Z"))
        assert t.online("client-features", 9) == {
            "client_id": 9,
            "spend": 2.0,
            "ts": "2026-01-02T00:00:00Z",
            "_event_time": 1767312000000,
        }
        assert t.online("client-features", 10) is None


def test_landing_rows_partitioned_by_event_date() -> None:
    app, _ = make_app()
    with TestClient(app) as t:
        t.send("client-events", ev(1, ts="2026-01-01T23:00:00+00:00"))
        t.send("client-events", ev(2, ts="2026-01-02T01:00:00+02:00"))
        rows = t.landed("client_features")
    assert [(r["client_id"], r["date"]) for r in rows] == [(1, "2026-01-01"), (2, "2026-01-01")]
    assert {r["_kafka_topic"] for r in rows} == {"client-events"}
    assert rows[0]["_kafka_offset"] == 0


def test_batch_handlers_list_and_dataframe() -> None:
    app = App("batches")
    seen: list[int] = []

    @app.handler(source="a", sink="a-out", batch_size=3)
    def by_list(events: list[ClientEvent], ctxs: list[Context]) -> list[Output | None]:
        seen.append(len(events))
        return [
            None if e.kind == "skip" else Output({"id": e.client_id, "p": c.offset})
            for e, c in zip(events, ctxs, strict=True)
        ]

    @app.handler(source="b", sink="b-out", batch_size=100)
    def by_frame(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(double=frame["amount"] * 2)[["client_id", "double"]]

    with TestClient(app) as t:
        for i in range(7):
            t.send("a", ev(i, "skip" if i == 4 else "order"), key=str(i))
        t.send("a", b"bad")
        for i in range(4):
            t.send("b", ev(i, amount=i))
        assert [o["id"] for o in t.outputs("a-out")] == [0, 1, 2, 3, 5, 6]
        assert [r.key for r in t.records("a-out")] == [b"0", b"1", b"2", b"3", b"5", b"6"]
        assert seen == [3, 3, 1]  # the bad record is dead-lettered, not batched
        assert t.outputs("b-out") == [{"client_id": i, "double": 2.0 * i} for i in range(4)]
        assert len(t.dead_letters("a")) == 1


def test_str_bytes_dict_and_async_handlers() -> None:
    app = App("kinds")

    @app.handler(source="s", sink="out")
    def on_str(text: str) -> str:
        return text.upper()

    @app.handler(source="b", sink="out")
    def on_bytes(raw: bytes) -> bytes:
        return raw[::-1]

    @app.handler(source="d", sink="out")
    async def on_dict(d: dict[str, Any]) -> dict[str, Any]:
        return {"n": d["n"] + 1}

    with TestClient(app) as t:
        t.send("s", "hi")
        t.send("b", b"abc")
        t.send("d", {"n": 1})
        t.send("d", [1, 2])  # a JSON array is not an object
        assert t.outputs("out") == ["HI", "cba", {"n": 2}]
        assert t.dead_letters("d")[0].error_message == "expected a JSON object, got list"


def test_unknown_topic_and_unencodable_output() -> None:
    app = App("odd")

    @app.handler(source="in", sink=OnlineStore("fs", entity_key="id"))
    def f(d: dict[str, Any]) -> dict[str, Any]:
        return d

    with TestClient(app) as t:
        with pytest.raises(ConsumerError, match=r"no handler reads topic 'nope' \(handled topics: in\)"):
            t.send("nope", {})
        t.send("in", {"other": 1})
        [letter] = t.dead_letters()
        assert letter.error_stage == "output"
        assert "entity_key" in letter.error_message


def test_handler_logs_carry_the_record_position(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    app = App("logs")
    log = logging.getLogger("user.handler")

    @app.handler(source="in")
    def h(d: dict[str, Any]) -> None:
        log.warning("handling %s", d["n"])

    caplog.set_level(logging.INFO)
    with TestClient(app) as t:
        t.send("in", {"n": 1}, partition=2)
        t.send("in", {"n": 2}, partition=2)
    records = [r for r in caplog.records if r.name == "user.handler"]
    assert [(r.__dict__["topic"], r.__dict__["partition"], r.__dict__["offset"]) for r in records] == [
        ("in", 2, 0),
        ("in", 2, 1),
    ]


def test_metrics_count_what_happened() -> None:
    app, _ = make_app()
    with TestClient(app) as t:
        t.send("client-events", ev(1))
        t.send("client-events", b"{")
        t.send("client-events", ev(2, "flaky"))
        registry = t.metrics.registry
    labels = {"handler": "featurize"}
    assert registry.get_sample_value("thimble_consumer_processed_messages_total", labels) == 1
    assert registry.get_sample_value("thimble_consumer_dead_lettered_messages_total", labels) == 2
    assert registry.get_sample_value("thimble_consumer_retried_messages_total", labels) == 3
    assert (
        registry.get_sample_value("thimble_consumer_failed_messages_total", {**labels, "stage": "decode"})
        == 1
    )
    assert registry.get_sample_value("thimble_consumer_handler_latency_seconds_count", labels) == 5


def test_a_batch_run_by_a_flush_is_counted() -> None:
    app = App("partial-batches")

    @app.handler(source="in", sink="out", batch_size=10)
    def copy(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return events

    with TestClient(app) as t:
        t.send("in", {"n": 1})
        t.send("in", {"n": 2})
        t.flush()  # a partial batch, run as at shutdown
        processed = t.metrics.registry.get_sample_value(
            "thimble_consumer_processed_messages_total", {"handler": "copy"}
        )
        assert processed == 2
