from __future__ import annotations

from typing import Any

import numpy as np

from thimble.modelops.compare import compare, table_rows


def _records(alias: str, role: str, version: int, values: np.ndarray, latency: float) -> list[dict[str, Any]]:
    return [
        {
            "request_id": f"{role}-{i}",
            "model": "churn",
            "version": version,
            "alias": alias,
            "role": role,
            "latency_ms": latency,
            "outputs": [{"p": float(v), "flag": bool(v > 0.5)}],
        }
        for i, v in enumerate(values)
    ]


def test_versions_are_compared_by_latency_mean_and_psi() -> None:
    rng = np.random.default_rng(0)
    primary = rng.uniform(0, 1, 800)
    records = (
        _records("churn@prod", "primary", 1, primary, 2.0)
        + _records("churn@canary", "canary", 2, rng.uniform(0.5, 1, 200), 3.0)
        + _records("churn@shadow", "shadow", 3, primary, 5.0)
        + [{"model": "other", "version": 1, "outputs": [{"p": 1.0}]}, {"model": "churn", "version": "x"}]
    )
    found = compare(records, "churn")
    assert found.skipped == {"'version' is not an integer": 1}  # returned with the statistics
    stats = {s.role: s for s in found.versions}
    assert set(stats) == {"primary", "canary", "shadow"}
    assert (stats["canary"].version, stats["canary"].requests, stats["canary"].latency_p50_ms) == (
        2,
        200,
        3.0,
    )
    assert stats["primary"].means["p"] == float(primary.mean())
    assert "flag" not in stats["primary"].means  # booleans are not numbers here
    assert stats["canary"].psi["p"] > 0.25  # shifted
    assert stats["shadow"].psi["p"] < 0.1  # scored every request: measured against every answer
    assert stats["primary"].psi == {}
    assert [row[0] for row in table_rows(list(stats.values()))] == [
        "churn@prod",
        "churn@canary",
        "churn@shadow",
    ]


def test_records_that_cannot_be_read_are_returned_counted_by_reason() -> None:
    records = [
        {"model": "churn", "version": True},
        {"model": "churn", "version": 1, "latency_ms": float("nan")},
        {"model": "churn", "version": 1, "latency_ms": "5"},
        {"model": "churn", "version": 1, "outputs": {"p": 1}},
        {"model": "other", "version": "x"},  # another model's: not counted
        {"model": "churn", "version": 1, "latency_ms": 1.0, "outputs": [{"p": 0.5}]},
    ]
    found = compare(records, "churn")
    assert found.skipped == {
        "'version' is not an integer": 1,
        "'latency_ms' is not a number": 2,
        "'outputs' is not a list": 1,
    }
    assert [(s.version, s.requests) for s in found.versions] == [(1, 1)]
