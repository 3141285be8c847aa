"""Compare the versions a server runs side by side (primary, canary, shadow) from its prediction log.

``thimble-modelops compare churn --topic predictions`` reads the topic from the beginning up to its end
when the command starts, groups one model's records by alias, role and version, and reports requests,
latency (p50, p99) and each numeric output's mean and PSI: a canary's against the primary, a shadow's against every
answer (the shadow scores the same requests).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from thimble.modelops import _drift
from thimble.modelops._topic_records import read_json_records


@dataclass
class VersionStats:
    """One served version's share of the prediction log."""

    alias: str
    role: str
    version: int
    requests: int = 0
    rows: int = 0
    latency_p50_ms: float = 0.0
    latency_p99_ms: float = 0.0
    means: dict[str, float] = field(default_factory=dict)
    psi: dict[str, float] = field(default_factory=dict)


@dataclass
class Comparison:
    """What :func:`compare` found: each served version's statistics, and the records it left out."""

    versions: list[VersionStats]
    skipped: Counter[str] = field(default_factory=Counter)
    """Records of the model that cannot be read, by reason (:func:`unreadable`)."""


@dataclass
class PredictionRecords:
    """What :func:`read_prediction_log` read: the records, and the messages it left out by reason."""

    records: list[dict[str, Any]]
    skipped: Counter[str] = field(default_factory=Counter)


def unreadable(record: dict[str, Any]) -> str | None:
    """Why a prediction record of the right model cannot be compared (``None`` when it can): the log is a
    topic anyone with access can write to, so a record is checked before its numbers are read."""
    version, latency, outputs = record.get("version"), record.get("latency_ms", 0.0), record.get("outputs")
    if not isinstance(version, int) or isinstance(version, bool):
        return "'version' is not an integer"
    if not isinstance(latency, int | float) or isinstance(latency, bool) or not math.isfinite(latency):
        return "'latency_ms' is not a number"
    if outputs is not None and not isinstance(outputs, list):
        return "'outputs' is not a list"
    return None


def compare(records: Iterable[dict[str, Any]], model: str) -> Comparison:
    """Per ``(alias, role, version)`` statistics of ``model``'s records; PSI is against the primary's outputs.

    A record of ``model`` that cannot be read (:func:`unreadable`) is left out and counted by its reason
    in :attr:`Comparison.skipped`."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    skipped: Counter[str] = Counter()
    for r in records:
        if r.get("model") != model:
            continue
        if (reason := unreadable(r)) is not None:
            skipped[reason] += 1
            continue
        key = (
            str(r.get("alias") or f"{model}@{r['version']}"),
            str(r.get("role") or "primary"),
            r["version"],
        )
        groups.setdefault(key, []).append(r)
    values: dict[tuple[str, str, int], dict[str, np.ndarray]] = {}
    stats = []
    for key, group in sorted(groups.items(), key=lambda kv: (kv[0][1] != "primary", kv[0])):
        latencies = np.asarray([float(r.get("latency_ms", 0.0)) for r in group])
        outputs = [o for r in group for o in r.get("outputs") or [] if isinstance(o, dict)]
        numeric: dict[str, list[float]] = {}
        for o in outputs:
            for name, v in o.items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    numeric.setdefault(name, []).append(float(v))
        values[key] = {name: np.asarray(vs) for name, vs in numeric.items()}
        stats.append(
            VersionStats(
                *key,
                requests=len(group),
                rows=len(outputs),
                latency_p50_ms=float(np.percentile(latencies, 50)),
                latency_p99_ms=float(np.percentile(latencies, 99)),
                means={name: float(vs.mean()) for name, vs in values[key].items()},
            )
        )
    primary = {k: v for k, v in values.items() if k[1] == "primary"}
    answered = {k: v for k, v in values.items() if k[1] != "shadow"}
    for s in stats:
        if s.role == "primary":
            continue
        # a canary answers a subset of entities: against the primary; a shadow scores every request:
        # against every answer (so that the same model shows no drift)
        base = _pooled(answered if s.role == "shadow" else primary)
        for name, vs in values[(s.alias, s.role, s.version)].items():
            hist = _drift.baseline(base[name]) if name in base else None
            if hist is not None and (p := _drift.psi(hist, vs)) is not None:
                s.psi[name] = p
    return Comparison(stats, skipped)


def _pooled(groups: dict[tuple[str, str, int], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    names = {name for g in groups.values() for name in g}
    return {name: np.concatenate([g[name] for g in groups.values() if name in g]) for name in names}


def read_prediction_log(
    kafka_config: dict[str, Any], topic: str, timeout_s: float = 30.0
) -> PredictionRecords:
    """Every record on ``topic`` from the beginning up to its end offsets now, with the messages that are
    not JSON objects counted as skipped; what was read by ``timeout_s`` when the read takes longer."""
    read = read_json_records(kafka_config, topic, group="thimble-compare", timeout_s=timeout_s)
    skipped = Counter({"not a JSON object": read.skipped}) if read.skipped else Counter[str]()
    return PredictionRecords([record for _, _, record in read.found], skipped)


def table_rows(stats: list[VersionStats]) -> list[list[str]]:
    """The comparison as text cells: alias, role, version, requests, p50, p99, means, PSI."""
    rows = []
    for s in stats:
        rows.append(
            [
                s.alias,
                s.role,
                str(s.version),
                str(s.requests),
                f"{s.latency_p50_ms:.2f}",
                f"{s.latency_p99_ms:.2f}",
                ", ".join(f"{k}={v:.4g}" for k, v in sorted(s.means.items())),
                ", ".join(f"{k}={v:.3f}" for k, v in sorted(s.psi.items())) if s.role != "primary" else "",
            ]
        )
    return rows
