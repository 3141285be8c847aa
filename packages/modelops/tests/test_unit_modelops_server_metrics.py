from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

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
