from __future__ import annotations

import asyncio
import sys
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from thimble.modelops._serving_stats import ServingStats
from thimble.modelops.config import load_modelops_settings
from thimble.modelops.server import ServerMetrics, Serving

pytestmark = pytest.mark.unit


class _Served:
    def __init__(self, name: str, failure: Exception | None = None) -> None:
        self.model = SimpleNamespace(name=name, version=1, ref=f"{name}@1")
        self.failure = failure
        self.flushed = 0

    def flush_metrics(self) -> None:
        if self.failure is not None:
            raise self.failure
        self.flushed += 1


def test_metrics_that_cannot_be_written_leave_the_other_models_written_and_serving_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = _Served("churn", OSError(28, "No space left on device"))
    fine = _Served("upsell")
    routes: dict[str, Any] = {"churn@1": broken, "upsell@prod": fine, "upsell@1": fine}
    serving = Serving(routes, load_modelops_settings(), ServerMetrics(CollectorRegistry()), None)
    with caplog.at_level("ERROR"):
        serving.flush_metrics()
        serving.flush_metrics()
    assert fine.flushed == 2  # once per flush, though two references name that version
    assert [r.getMessage() for r in caplog.records].count("request metrics not written") == 2


class _Features(BaseModel):
    orders: float


class _Prediction(BaseModel):
    score: float


def test_every_request_lands_in_exactly_one_serving_window_while_windows_are_recorded() -> None:
    model: Any = SimpleNamespace(
        features=None, input_type=_Features, output_type=_Prediction, info=None, name="m", version=1
    )
    stats = ServingStats(model, tracker=None)
    recorded: list[dict[str, float]] = []
    requests, rows_per_request = 3_000, 2

    async def serve() -> None:
        for i in range(requests):
            rows = [_Features(orders=i)] * rows_per_request
            stats.add(0.001, rows, [_Prediction(score=0.5)] * rows_per_request)
            stats.missing_features["orders"] = stats.missing_features.get("orders", 0) + 1
            await asyncio.sleep(0)  # the next request comes while a window may be recorded

    async def record_until(served: asyncio.Task[None]) -> None:
        while not served.done():
            window = stats.take()
            if window is not None:
                recorded.append(await asyncio.to_thread(stats.record, window))
            await asyncio.sleep(0)

    async def main() -> None:
        served = asyncio.create_task(serve())
        await record_until(served)
        window = stats.take()
        if window is not None:
            recorded.append(stats.record(window))

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        asyncio.run(main())
    finally:
        sys.setswitchinterval(switch)
    assert len(recorded) > 1
    assert sum(m["requests"] for m in recorded) == requests
    assert sum(m["rows"] for m in recorded) == requests * rows_per_request
    assert sum(m["missing_features.orders"] for m in recorded) == requests


def test_a_window_of_outputs_whose_sum_overflows_records_their_mean_without_a_warning() -> None:
    # pytest turns warnings into errors here: numpy's "overflow encountered in reduce" failed the window
    model: Any = SimpleNamespace(
        features=None, input_type=_Features, output_type=_Prediction, info=None, name="m", version=1
    )
    stats = ServingStats(model, tracker=None)
    stats.add(0.001, [_Features(orders=1)] * 2, [_Prediction(score=1.7e308)] * 2)
    stats.add(0.001, [_Features(orders=1)], [_Prediction(score=-1.7e308)])
    window = stats.take()
    assert window is not None
    metrics = stats.record(window)
    assert metrics["prediction.score.mean"] == pytest.approx(1.7e308 / 3)
    assert metrics["requests"] == 2.0

    stats.add(0.001, [_Features(orders=1)], [_Prediction(score=float("inf"))])
    window = stats.take()
    assert window is not None
    assert "prediction.score.mean" not in stats.record(window)  # not a finite number: absent
