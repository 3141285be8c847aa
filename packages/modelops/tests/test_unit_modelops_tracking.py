"""The metrics store and the dashboard page keep to what JSON can hold, and read what they can."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from thimble.modelops import Tracker, dashboard
from thimble.modelops._drift import Histogram
from thimble.modelops.dashboard import render

pytestmark = pytest.mark.unit

GOOD = Histogram(edges=[0.5], fractions=[0.4, 0.6], count=10)


def _insert(tracker: Tracker, model: str, metrics: str, distributions: str = "{}", info: str = "{}") -> None:
    with sqlite3.connect(tracker.path) as conn:
        conn.execute(
            "INSERT INTO records (time, model, version, source, run_id, metrics, distributions, info) "
            "VALUES (1760000000, ?, 1, 'save', 'save-1', ?, ?, ?)",
            (model, metrics, distributions, info),
        )


def test_values_that_are_not_finite_are_left_out_of_a_record_and_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tracker = Tracker(tmp_path / "t.sqlite")
    with caplog.at_level(logging.WARNING):
        tracker.record(
            "m",
            1,
            "serve",
            "r",
            {"rows": 2.0, "prediction.y.mean": float("inf"), "psi.input.x": float("nan")},
            {"output.y": Histogram(edges=[float("inf")], fractions=[0.5, 0.5], count=2), "output.z": GOOD},
        )
    (record,) = tracker.records()
    assert record.metrics == {"rows": 2.0}
    assert record.distributions == {"output.z": GOOD}
    assert set(record.info["not_finite"]) == {"prediction.y.mean", "psi.input.x", "output.y"}
    assert "prediction.y.mean: inf (not recorded)" in record.problems
    assert "metrics not recorded" in caplog.text
    with pytest.raises(ValueError, match="finite"):
        tracker.record("m", 1, "serve", "r", {"rows": 1.0}, at=float("inf"))


def test_a_record_that_cannot_be_read_whole_is_read_as_far_as_it_can_be(tmp_path: Path) -> None:
    tracker = Tracker(tmp_path / "t.sqlite")
    _insert(tracker, "m", '{"train.auc": null, "rows": 3}', "not json", "[1]")  # as 0.1.0 wrote auc=nan
    (record,) = tracker.records()
    assert record.metrics == {"rows": 3.0}
    assert record.distributions == {}
    assert record.info == {}
    assert record.problems[0] == "metric train.auc: null is not a finite number"
    assert len(record.problems) == 3


def test_the_dashboard_draws_every_model_when_one_has_a_bad_record(tmp_path: Path) -> None:
    tracker = Tracker(tmp_path / "t.sqlite")
    tracker.record("churn", 1, "save", "save-1", {"train.auc": 0.81}, {"output.p": GOOD})
    tracker.record("churn", 1, "serve", "s", {"rows": 5.0, "psi.output.p": 0.02}, {"output.p": GOOD})
    _insert(tracker, "atk-p", '{"train.auc": null}')
    page = render(tracker)
    assert "data-model='churn'" in page
    assert "chart-churn-1-distribution" in page
    assert "data-model='atk-p'" in page
    assert "not drawn: metric train.auc: null is not a finite number" in page


def test_a_version_that_cannot_be_drawn_does_not_take_the_page_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker = Tracker(tmp_path / "t.sqlite")
    tracker.record("churn", 1, "serve", "s", {"rows": 5.0})
    tracker.record("other", 1, "serve", "s", {"rows": 5.0})
    drawn = dashboard.charts_for

    def charts_for(records: list[dashboard.Record]) -> dict[str, dict[str, object]]:
        if records[0].model == "other":
            raise ZeroDivisionError("a chart bug")
        return drawn(records)

    monkeypatch.setattr(dashboard, "charts_for", charts_for)
    page = render(tracker)
    assert "chart-churn-1-volume" in page
    assert "cannot draw this version from its records (ZeroDivisionError" in page
    assert "chart-other-1" not in page
