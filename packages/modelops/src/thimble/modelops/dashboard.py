"""``thimble-modelops dashboard``: a page of charts per model and version, from the metrics store.

For each version: the prediction distribution over time (serving windows and batch runs, against the
training sample), drift (PSI of inputs and predictions), and serving latency percentiles. plotly.js is
served from the installed plotly package: the page needs no internet. A record that cannot be read whole
is drawn from what can be, and named under its version; a version that cannot be drawn says so, and the
others are drawn.
"""

from __future__ import annotations

import html
import itertools
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse, Response

from thimble.common.logging import get_logger
from thimble.modelops.__about__ import __version__
from thimble.modelops._http import json_response
from thimble.modelops._names import check_model_name, check_version
from thimble.modelops.errors import InvalidNameError
from thimble.modelops.tracking import Record, Tracker

log = get_logger(__name__)

_COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4d7c0f", "#be185d"]
_LAYOUT: dict[str, Any] = {
    "margin": {"l": 50, "r": 20, "t": 40, "b": 40},
    "height": 300,
    "paper_bgcolor": "white",
    "plot_bgcolor": "#f8fafc",
    "font": {"family": "system-ui, sans-serif", "size": 12},
    "legend": {"orientation": "h", "y": -0.2},
}


def plotly_js_path() -> Path:
    """The plotly.min.js shipped inside the plotly package."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def _time(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _bin_labels(edges: list[float]) -> list[str]:
    if not edges:
        return ["all"]
    labels = [f"< {edges[0]:.3g}"]
    labels += [f"{a:.3g} to {b:.3g}" for a, b in itertools.pairwise(edges)]
    labels.append(f"≥ {edges[-1]:.3g}")
    return labels


def _distribution_chart(records: list[Record]) -> dict[str, Any] | None:
    keys = sorted({k for r in records for k in r.distributions})
    if not keys:
        return None
    key = keys[0]
    points = [(r, r.distributions[key]) for r in records if key in r.distributions]
    edges = points[-1][1].edges
    points = [(r, h) for r, h in points if h.edges == edges]
    points.sort(key=lambda p: p[0].time)
    # a real time axis: every window keeps its own column, however close or far apart in time
    x = [_time(r.time) for r, _ in points]
    z = [[h.fractions[i] for _, h in points] for i in range(len(edges) + 1)]
    sources = ["training sample" if r.source == "save" else r.source for r, _ in points]
    return {
        "data": [
            {
                "type": "heatmap",
                "x": x,
                "y": _bin_labels(edges),
                "z": z,
                "text": [sources for _ in z],
                "hovertemplate": "%{text} %{x}<br>%{y}: %{z:.1%}<extra></extra>",
                "colorscale": "Blues",
                "reversescale": True,  # plotly.js lists Blues dark to light: an empty bin should be light
                "zmin": 0.0,
                "zmax": max(1e-9, max(max(row) for row in z)),
                "colorbar": {"title": {"text": "share"}},
            }
        ],
        "layout": {
            **_LAYOUT,
            "margin": {**_LAYOUT["margin"], "l": 120},
            "title": {"text": f"Prediction distribution over time ({key.removeprefix('output.')})"},
            "xaxis": {"type": "date"},
        },
    }


def _line_chart(
    records: list[Record], prefix: str, title: str, unit: str, thresholds: tuple[float, ...] = ()
) -> dict[str, Any] | None:
    series: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for r in records:
        for k, v in r.metrics.items():
            if k.startswith(prefix):
                series[k.removeprefix(prefix)].append((_time(r.time), v))
    if not series:
        return None
    data: list[dict[str, Any]] = [
        {
            "type": "scatter",
            "mode": "lines+markers",
            "name": name,
            "x": [p[0] for p in pts],
            "y": [p[1] for p in pts],
            "line": {"color": _COLORS[i % len(_COLORS)]},
        }
        for i, (name, pts) in enumerate(sorted(series.items()))
    ]
    shapes = [
        {
            "type": "line",
            "xref": "paper",
            "x0": 0,
            "x1": 1,
            "y0": t,
            "y1": t,
            "line": {"dash": "dot", "color": "#94a3b8"},
        }
        for t in thresholds
    ]
    return {
        "data": data,
        "layout": {
            **_LAYOUT,
            "title": {"text": title},
            "xaxis": {"type": "date"},
            "yaxis": {"title": {"text": unit}, "rangemode": "tozero"},
            "shapes": shapes,
        },
    }


def charts_for(records: list[Record]) -> dict[str, dict[str, Any]]:
    """The charts of one model version: ``distribution``, ``drift``, ``latency``, ``volume`` (when there is data)."""
    charts = {
        "distribution": _distribution_chart(records),
        "drift": _line_chart(records, "psi.", "Drift against the training sample (PSI)", "PSI", (0.1, 0.25)),
        "latency": _line_chart(
            [r for r in records if r.source == "serve"], "latency.", "Serving latency", "ms"
        ),
        "volume": _line_chart([r for r in records if r.source != "save"], "rows", "Rows predicted", "rows"),
    }
    return {k: v for k, v in charts.items() if v is not None}


def _summary(records: list[Record]) -> str:
    saves = [r for r in records if r.source == "save"]
    items = []
    if saves:
        s = saves[-1]
        items += [
            f"<li>{html.escape(k.removeprefix('train.'))}: <b>{v:.4g}</b></li>"
            for k, v in s.metrics.items()
            if k.startswith("train.")
        ]
        if s.info.get("training_data"):
            items.append(f"<li>training data: <code>{html.escape(str(s.info['training_data']))}</code></li>")
        items.append(f"<li>saved: {_time(s.time)}</li>")
    counts: dict[str, int] = defaultdict(int)
    for r in records:
        counts[r.source] += 1
    items.append(
        "<li>records: " + ", ".join(f"{n} {html.escape(k)}" for k, n in sorted(counts.items())) + "</li>"
    )
    problems = [p for r in records for p in r.problems]
    if problems:
        listed = "; ".join(problems[:3]) + (f"; {len(problems) - 3} more" if len(problems) > 3 else "")
        items.append(f"<li class='problems'>not drawn: {html.escape(listed)}</li>")
    return "<ul class='summary'>" + "".join(items) + "</ul>"


def _section(name: str, version: int | None, records: list[Record], payload: dict[str, Any]) -> str:
    """The section of one model version; its charts go into ``payload``."""
    charts = charts_for(records)
    summary = _summary(records)
    divs = []
    for kind, fig in charts.items():
        div_id = f"chart-{name}-{version}-{kind}"
        payload[div_id] = fig
        divs.append(f"<div class='chart chart-{kind}' id='{html.escape(div_id)}'></div>")
    body = "<div class='grid'>" + "".join(divs) + "</div>" if divs else "<p class='empty'>no metrics yet</p>"
    return (
        f"<section class='model' data-model='{html.escape(name)}' data-version='{version}'>"
        f"<h2>{html.escape(name)} <small>version {version}</small></h2>{summary}{body}</section>"
    )


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Thimble models</title>
<script src="/static/plotly.min.js"></script>
<style>
body {{ font-family: system-ui, sans-serif; margin: 0; background: #f1f5f9; color: #0f172a; }}
header {{ background: #0f172a; color: white; padding: 14px 24px; font-size: 20px; }}
header span {{ color: #94a3b8; font-size: 13px; margin-left: 12px; }}
main {{ padding: 16px 24px; }}
section.model {{ background: white; border-radius: 8px; padding: 12px 18px; margin-bottom: 18px; box-shadow: 0 1px 3px rgba(0,0,0,.08); }}
section.model h2 {{ margin: 4px 0 8px; font-size: 18px; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); gap: 12px; }}
.summary {{ display: flex; gap: 18px; list-style: none; padding: 0; margin: 0 0 8px; color: #334155; font-size: 13px; flex-wrap: wrap; }}
.empty {{ color: #64748b; }}
.problems {{ color: #b45309; }}
</style></head>
<body><header>Thimble models<span>{store}</span></header><main>
{sections}
</main>
<script>
const charts = {payload};
for (const [id, fig] of Object.entries(charts)) {{
  Plotly.newPlot(id, fig.data, fig.layout, {{responsive: true, displayModeBar: false}});
}}
</script></body></html>
"""


def render(tracker: Tracker, model: str | None = None) -> str:
    """The dashboard page (all models, or one)."""
    by_version: dict[tuple[str, int | None], list[Record]] = defaultdict(list)
    for r in tracker.records(model=model):
        by_version[(r.model, r.version)].append(r)
    sections: list[str] = []
    payload: dict[str, Any] = {}
    for (name, version), records in sorted(by_version.items(), key=lambda kv: (kv[0][0], -(kv[0][1] or 0))):
        charts: dict[str, Any] = {}
        try:
            sections.append(_section(name, version, records, charts))
        except Exception as exc:  # one version's records must not take the page of every model down
            log.warning(
                "dashboard: a model version cannot be drawn",
                extra={"model": name, "model_version": version, "error": f"{type(exc).__name__}: {exc}"},
            )
            sections.append(
                f"<section class='model' data-model='{html.escape(name)}' data-version='{version}'>"
                f"<h2>{html.escape(name)} <small>version {version}</small></h2><p class='problems'>"
                f"cannot draw this version from its records ({html.escape(type(exc).__name__)}; "
                "see the dashboard's log and /api/records)</p></section>"
            )
            continue
        payload.update(charts)
    if not sections:
        sections.append(
            "<p class='empty'>No models have recorded metrics yet: save one, then serve or batch it.</p>"
        )
    return _PAGE.format(
        store=html.escape(str(tracker.path)),
        sections="\n".join(sections),
        payload=orjson.dumps(payload).decode().replace("</", "<\\/"),
    )


def create_dashboard(tracker: Tracker) -> FastAPI:
    """The dashboard app: ``/`` (page, ``?model=`` to filter), ``/api/records``, ``/static/plotly.min.js``."""
    app = FastAPI(title="Thimble model dashboard", version=__version__)
    js = plotly_js_path()

    @app.get("/", response_class=HTMLResponse)
    async def page(model: str | None = None) -> HTMLResponse:
        return HTMLResponse(render(tracker, model))

    @app.get("/static/plotly.min.js")
    async def plotly_js() -> FileResponse:
        return FileResponse(js, media_type="application/javascript")

    @app.get("/api/records")
    async def records(model: str | None = None, version: str | None = None) -> Response:
        """The records, oldest first, of every model or of ``model`` (and ``version``): a 422 with one
        message when either is not a model name or a version number."""
        try:
            name = check_model_name(model) if model is not None else None
            number = check_version(version) if version is not None else None
        except InvalidNameError as exc:
            return json_response(422, {"detail": str(exc)})
        rows = [
            r.__dict__ | {"distributions": {k: h.model_dump() for k, h in r.distributions.items()}}
            for r in tracker.records(name, number)
        ]
        return Response(orjson.dumps(rows), media_type="application/json")

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(b"ok\n", media_type="text/plain")

    return app
