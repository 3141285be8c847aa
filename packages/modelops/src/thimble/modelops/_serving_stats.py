"""Windows of serving statistics, recorded into the metrics store every few seconds.

The request path appends ``(latency, rows, outputs)`` to a bounded deque; every few seconds the event
loop takes the window (:meth:`ServingStats.take`, on the loop, so no request falls between two windows)
and a thread turns it into latency percentiles, a prediction distribution and PSI drift of inputs and
predictions against the model's training sample (:meth:`ServingStats.record`).
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from thimble.modelops import _drift
from thimble.modelops.envelope import LoadedModel, numeric_fields
from thimble.modelops.tracking import Tracker

MAX_LATENCIES = 100_000
MAX_DRIFT_REQUESTS = 2_000  # the most recent requests of a window are what drift is measured on


@dataclass(frozen=True)
class Window:
    """The requests of one window, taken from the request path."""

    requests: int
    rows: int
    latencies_s: list[float]
    recent: list[tuple[list[Any], list[Any]]]
    missing_features: dict[str, int]


class ServingStats:
    """Collects one model's requests and summarises them per window.

    :meth:`add`, :meth:`take` and ``missing_features`` belong to the event loop; :meth:`record` may run
    in a thread.
    """

    def __init__(self, model: LoadedModel, tracker: Tracker | None) -> None:
        self.model = model
        self.tracker = tracker
        self.run_id = f"serve-{socket.gethostname()}-{os.getpid()}-{int(time.time())}"
        self._latencies: deque[float] = deque(maxlen=MAX_LATENCIES)
        self._window: deque[tuple[list[Any], list[Any]]] = deque(maxlen=MAX_DRIFT_REQUESTS)
        self._requests = 0
        self._rows = 0
        self.missing_features: dict[str, int] = {}
        entity = model.features.entity_key if model.features else None
        self._inputs = [f for f in numeric_fields(model.input_type) if f != entity]
        self._outputs = numeric_fields(model.output_type)

    def add(self, latency_s: float, rows: list[Any], outputs: list[Any]) -> None:
        self._latencies.append(latency_s)
        self._window.append((rows, outputs))
        self._requests += 1
        self._rows += len(rows)

    def take(self) -> Window | None:
        """The window so far, and a new one begun (``None`` when no request came)."""
        if not self._requests:
            return None
        window = Window(
            self._requests, self._rows, list(self._latencies), list(self._window), self.missing_features
        )
        self._latencies.clear()
        self._window.clear()
        self._requests = self._rows = 0
        self.missing_features = {}
        return window

    def record(self, window: Window) -> dict[str, float]:
        """Summarise a taken window into the metrics store; return its metrics."""
        latencies = np.asarray(window.latencies_s, dtype="float64") * 1000.0
        rows = [r for w in window.recent for r in w[0]]
        outputs = [o for w in window.recent for o in w[1]]
        metrics: dict[str, float] = {
            "requests": float(window.requests),
            "rows": float(window.rows),
            "latency.p50_ms": float(np.percentile(latencies, 50)),
            "latency.p90_ms": float(np.percentile(latencies, 90)),
            "latency.p99_ms": float(np.percentile(latencies, 99)),
        }
        for field, count in window.missing_features.items():
            metrics[f"missing_features.{field}"] = float(count)
        baseline = self.model.info.baseline if self.model.info else {}
        dists: dict[str, _drift.Histogram] = {}
        for prefix, fields, items in (("input", self._inputs, rows), ("output", self._outputs, outputs)):
            for field in fields:
                values = np.asarray(
                    [v for v in (getattr(i, field) for i in items) if v is not None], dtype="float64"
                )
                base = baseline.get(f"{prefix}.{field}")
                if values.size == 0:
                    continue
                if base is not None and (psi := _drift.psi(base, values)) is not None:
                    metrics[f"psi.{prefix}.{field}"] = psi
                if prefix == "output":
                    if (mean := _mean(values)) is not None:
                        metrics[f"prediction.{field}.mean"] = mean
                    with np.errstate(over="ignore", invalid="ignore"):  # quantiles of values far apart
                        hist = (
                            _drift.histogram(values, base.edges)
                            if base is not None
                            else _drift.baseline(values)
                        )
                    if hist is not None and all(math.isfinite(e) for e in hist.edges):
                        dists[f"output.{field}"] = hist
        if self.tracker is not None:
            self.tracker.record(self.model.name, self.model.version, "serve", self.run_id, metrics, dists)
        return metrics


def _mean(values: np.ndarray) -> float | None:
    """The mean of ``values``, also when their sum is beyond float64 (``1.7e308`` twice: each value is
    divided first); ``None`` when it is not a finite number (a NaN or infinite value among them)."""
    with np.errstate(over="ignore", invalid="ignore"):
        mean = float(values.mean())
        if math.isinf(mean):
            mean = float((values / values.size).sum())
    return mean if math.isfinite(mean) else None
