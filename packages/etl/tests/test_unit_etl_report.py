"""The report's charts, checked in their figure data and in what a real headless browser draws."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from thimble.etl.history import TableVersion
from thimble.etl.report import MetricRow, checks_figure, metric_figures, render, run_outcomes

pytestmark = pytest.mark.unit

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
START = datetime(2026, 12, 1, 8, tzinfo=UTC)


def _run(run_id: str, hour: int, committed: bool, check_status: str) -> list[MetricRow]:
    at = START + timedelta(hours=hour)
    return [
        MetricRow(run_id, at, committed, "metric", "row_count", 3.0, None, ""),
        MetricRow(run_id, at, committed, "check", "row_count >= 3", 3.0, check_status, ""),
    ]


ROWS = [
    *_run("r1", 0, True, "pass"),
    *_run("r2", 1, True, "pass"),
    *_run("r3", 2, False, "pass"),  # nothing to write: no commit, no failing check
    *_run("r4", 3, False, "fail"),  # blocked
]
VERSIONS = [
    TableVersion(1, START + timedelta(hours=1), "MERGE", "r2", "h", 4, 0, 1, 0, {"pass": 1, "warn": 0, "fail": 0}),
    TableVersion(0, START, "CREATE TABLE AS SELECT", "r1", "h", 3, 3, 0, 0, {"pass": 1, "warn": 0, "fail": 0}),
]  # fmt: skip


def test_runs_with_nothing_to_write_are_not_drawn_as_blocked() -> None:
    assert run_outcomes(ROWS) == {
        "r1": "committed",
        "r2": "committed",
        "r3": "nothing to write",
        "r4": "blocked",
    }
    (row_count,) = metric_figures(ROWS)
    traces = {trace.name: trace for trace in row_count.data}
    assert {name: list(trace.text) for name, trace in traces.items()} == {
        "committed": ["r1", "r2"],
        "nothing to write": ["r3"],
        "blocked": ["r4"],
    }
    assert traces["nothing to write"].marker.symbol != traces["blocked"].marker.symbol


def test_one_check_gets_a_readable_row() -> None:
    heatmap = checks_figure(ROWS)

    assert heatmap is not None
    layout = heatmap.layout
    assert layout.height - layout.margin.t - layout.margin.b >= 30
    assert list(heatmap.data[0].y) == ["row_count &gt;= 3"]  # drawn as written: row_count >= 3
    assert checks_figure([row for row in ROWS if row.kind == "metric"]) is None


def test_versions_show_rows_changed_and_check_counts() -> None:
    page = render("warehouse.clients", ROWS, VERSIONS)

    assert "<th>rows changed</th>" in page
    assert "<td>1 pass, 0 warn, 0 fail</td>" in page
    assert "{&#x27;pass&#x27;" not in page


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (./dev setup installs it)")
def test_a_browser_draws_every_chart_at_a_readable_size(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(render("warehouse.clients", ROWS, VERSIONS))

    dom = subprocess.run(
        [str(CHROMIUM), "--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
         "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip

    plots = [float(h) for h in re.findall(r'<rect class="nsewdrag drag"[^>]*?height="([\d.]+)"', dom)]
    assert len(plots) == 2, plots  # the metric's chart and the checks' chart
    assert min(plots) >= 30, plots
    legend = re.findall(r'<text class="legendtext"[^>]*>([^<]+)</text>', dom)
    assert legend == ["committed", "nothing to write", "blocked"]


HOSTILE = ["<script>alert(1)</script>", '"><img src=x onerror=alert(2)>', "&amp;", "<b>bold</b> & co"]


def _hostile_rows() -> list[MetricRow]:
    rows = []
    for i, name in enumerate(HOSTILE):
        at = START + timedelta(hours=i)
        rows += [
            MetricRow(name, at, True, "metric", name, 1.0, None, ""),
            MetricRow(name, at, True, "check", name, 1.0, "warn", name),
        ]
    return rows


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (./dev setup installs it)")
def test_user_text_is_drawn_as_written_never_as_markup(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    versions = [
        TableVersion(i, START, "WRITE", name, name, 1, 1, 0, 0, {"pass": 0, "warn": 1, "fail": 0})
        for i, name in enumerate(HOSTILE)
    ]
    page.write_text(render(HOSTILE[1], _hostile_rows(), versions))

    dom = subprocess.run(
        [str(CHROMIUM), "--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
         "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip

    assert "<img" not in dom
    assert "<b>" not in dom
    assert "alert(1)</script>" not in dom
    assert not re.search(r"<tspan[^>]*font-weight", dom)  # plotly draws <b> as a bold tspan
    # Every name is shown whole, as written: in the charts (titles, axis labels) and the versions table.
    svg_text = [html.unescape(t) for t in re.findall(r"<text[^>]*>([^<]*)</text>", dom)]
    cells = [html.unescape(t) for t in re.findall(r"<td>([^<]*)</td>", dom)]
    titles = [html.unescape(t) for t in re.findall(r"<h1>([^<]*)</h1>", dom)]
    for name in HOSTILE:
        assert name in svg_text, (name, svg_text)  # a metric's chart title, a check's row
        assert name in cells
    assert titles == [HOSTILE[1]]
