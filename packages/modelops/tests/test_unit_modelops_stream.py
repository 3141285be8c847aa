from __future__ import annotations

import pytest

from thimble.consumer import TestClient
from thimble.modelops import Registry
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
