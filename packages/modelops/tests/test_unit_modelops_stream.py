from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from thimble.consumer import TestClient
from thimble.modelops import ModelContext, Registry, model
from thimble.modelops.stream import stream_app

pytestmark = pytest.mark.unit


def test_the_model_runs_as_a_consumer_batch_handler(saved_churn: Registry) -> None:
    model = saved_churn.load("churn@prod")
    app = stream_app(model, "client-features", "churn-scores", batch_size=10)
    rows = [{"client_id": i, "orders_7d": i, "spend_7d": 10.0 * i} for i in range(5)]
    with TestClient(app) as t:
        for row in rows:
            t.send("client-features", row, key=str(row["client_id"]))
        t.send("client-features", {"client_id": 9, "spend_7d": "lots"}, key="9")
        t.flush()
        outputs = t.outputs("churn-scores")
        dead = t.dead_letters("client-features")
    expected = model.predict(rows)
    assert [{k: o[k] for k in ("p_churn", "high_risk")} for o in outputs] == expected
    assert [o["client_id"] for o in outputs] == [0, 1, 2, 3, 4]
    assert {(o["_model"], o["_model_version"]) for o in outputs} == {("churn", 1)}
    assert len(dead) == 1


class Reading(BaseModel):
    client_id: int
    x: float


class Doubled(BaseModel):
    y: float


@model(name="fragile")
def fragile(ctx: ModelContext, rows: list[Reading]) -> list[Doubled]:
    """Doubles x; fails on a whole call holding x == 13, and returns infinity past the float range."""
    if any(r.x == 13 for r in rows):
        raise ValueError("unlucky row")
    return [Doubled(y=r.x * 2) for r in rows]


def test_a_stream_row_that_fails_is_dead_lettered_alone_and_rows_are_as_strict_as_http(
    registry: Registry,
) -> None:
    registry.save(fragile, sample=[{"client_id": 0, "x": 1.0}], pickle_function=True)
    app = stream_app(registry.load("fragile"), "readings", "doubled", batch_size=20)
    sent: list[tuple[str, Any]] = [
        ("ok-1", {"client_id": 1, "x": 1.5}),
        ("nan", b'{"client_id": 2, "x": NaN}'),
        ("huge", b'{"client_id": 3, "x": 1e999}'),
        ("text-number", {"client_id": 4, "x": "2.5"}),
        ("bool-id", {"client_id": True, "x": 1.0}),
        ("unlucky", {"client_id": 5, "x": 13}),
        ("overflows", {"client_id": 6, "x": 1.7e308}),
        ("ok-2", {"client_id": 7.0, "x": 2}),
    ]
    with TestClient(app) as t:
        for key, value in sent:
            t.send("readings", value, key=key)
        t.flush()
        outputs = {r.key: r.json() for r in t.records("doubled")}
        dead = {d.key: d for d in t.dead_letters("readings")}
    assert {k: v["y"] for k, v in outputs.items()} == {b"ok-1": 3.0, b"ok-2": 4.0}
    assert outputs[b"ok-2"]["_model"] == "fragile"
    assert {k: d.error_stage for k, d in dead.items()} == {
        b"nan": "decode",
        b"huge": "decode",
        b"text-number": "validate",
        b"bool-id": "validate",
        b"unlucky": "handler",
        b"overflows": "handler",
    }
    assert "unlucky row" in dead[b"unlucky"].error_message
    assert dead[b"nan"].value == b'{"client_id": 2, "x": NaN}'
