"""Population stability index (PSI) of a numeric column against a baseline sample."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel

BINS = 10
_EPS = 1e-4


class Histogram(BaseModel):
    """Bin edges (inner cut points) and the fraction of rows in each bin."""

    edges: list[float]
    fractions: list[float]
    count: int


def _clean(values: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype="float64")
    clean: np.ndarray = arr[np.isfinite(arr)]
    return clean


def baseline(values: Sequence[float] | np.ndarray, bins: int = BINS) -> Histogram | None:
    """Quantile bins of a baseline sample (``None`` when it has no finite value)."""
    arr = _clean(values)
    if arr.size == 0:
        return None
    edges = np.unique(np.quantile(arr, np.linspace(0, 1, bins + 1)[1:-1]))
    return histogram(arr, edges.tolist())


def histogram(values: Sequence[float] | np.ndarray, edges: list[float]) -> Histogram:
    """Fractions of ``values`` in the bins cut at ``edges`` (values equal to an edge go right)."""
    arr = _clean(values)
    counts = np.bincount(np.searchsorted(np.asarray(edges), arr, side="right"), minlength=len(edges) + 1)
    total = int(counts.sum())
    fractions = (counts / total).tolist() if total else [0.0] * (len(edges) + 1)
    return Histogram(edges=edges, fractions=fractions, count=total)


def psi(expected: Histogram, actual_values: Sequence[float] | np.ndarray) -> float | None:
    """PSI of ``actual_values`` against ``expected`` (< 0.1 stable, 0.1-0.25 moderate, > 0.25 shifted)."""
    actual = histogram(actual_values, expected.edges)
    if actual.count == 0 or expected.count == 0:
        return None
    e = np.clip(np.asarray(expected.fractions), _EPS, None)
    a = np.clip(np.asarray(actual.fractions), _EPS, None)
    return float(np.sum((a - e) * np.log(a / e)))
