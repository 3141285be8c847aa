"""Windows of serving statistics, recorded into the metrics store every few seconds.

The request path appends ``(latency, rows, outputs)`` to a bounded deque; a background task turns each
window into latency percentiles, a prediction distribution and PSI drift of inputs and predictions
against the model's training sample.
"""

from __future__ import annotations

import os
import socket
import time
from collections import deque
from typing import Any

import numpy as np

from thimble.modelops import _drift
from thimble.modelops.envelope import LoadedModel, numeric_fields
from thimble.modelops.tracking import Tracker

MAX_LATENCIES = 100_000
MAX_DRIFT_REQUESTS = 2_000  # the most recent requests of a window are what drift is measured on


class ServingStats:
    """Collects one model's requests and summarises them per window."""

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

    def flush(self) -> dict[str, float] | None:
        """Summarise and record the window so far; return its metrics (``None`` when empty)."""
        window, latencies_s = list(self._window), list(self._latencies)
        requests, total_rows = self._requests, self._rows
        self._window.clear()
        self._latencies.clear()
        self._requests = self._rows = 0
        if not requests:
            return None
        latencies = np.asarray(latencies_s, dtype="float64") * 1000.0
        rows = [r for w in window for r in w[0]]
        outputs = [o for w in window for o in w[1]]
        metrics: dict[str, float] = {
            "requests": float(requests),
            "rows": float(total_rows),
            "latency.p50_ms": float(np.percentile(latencies, 50)),
            "latency.p90_ms": float(np.percentile(latencies, 90)),
            "latency.p99_ms": float(np.percentile(latencies, 99)),
        }
        for field, count in self.missing_features.items():
            metrics[f"missing_features.{field}"] = float(count)
        self.missing_features = {}
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
                    metrics[f"prediction.{field}.mean"] = float(values.mean())
                    hist = (
                        _drift.histogram(values, base.edges) if base is not None else _drift.baseline(values)
                    )
                    if hist is not None:
                        dists[f"output.{field}"] = hist
        if self.tracker is not None:
            self.tracker.record(self.model.name, self.model.version, "serve", self.run_id, metrics, dists)
        return metrics
