"""An HTML report of a table: metric history and check outcomes, as self-contained plotly charts."""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from thimble.common.config import ThimbleSettings, load_settings
from thimble.common.spark import as_utc
from thimble.etl import _tables
from thimble.etl.config import EtlSettings
from thimble.etl.errors import EtlError, TableNotFoundError
from thimble.etl.history import VERSION_COLUMNS, TableVersion, history

if TYPE_CHECKING:
    import plotly.graph_objects as go
    from pyspark.sql import SparkSession

Outcome = Literal["committed", "nothing to write", "blocked"]

_STATUS_VALUE = {"pass": 0, "warn": 1, "fail": 2}
# How each run outcome is drawn on a metric's chart: (marker symbol, colour, line between points).
_OUTCOME_STYLE: dict[Outcome, tuple[str, str, bool]] = {
    "committed": ("circle", "#1565c0", True),
    "nothing to write": ("circle-open", "#757575", False),
    "blocked": ("x", "#c62828", False),
}
_CHECK_ROW_PX = 40
_MARGIN = {"l": 40, "r": 20, "t": 60, "b": 90}


@dataclass(frozen=True)
class MetricRow:
    """One row of the metrics table (a metric value or a check outcome of one run)."""

    run_id: str
    run_at: datetime
    committed: bool
    kind: str
    name: str
    value: float | None
    status: str | None
    detail: str


def _shown(text: str) -> str:
    """``text`` to be drawn by plotly as written: plotly reads tags (``<b>``, ``<br>``, ``<a href>``) and
    entities in every label, title and hover text, so ``&``, ``<`` and ``>`` become entities it decodes
    back (it knows ``&amp;``, ``&lt;``, ``&gt;``, not ``&quot;``, so quotes are left as they are)."""
    return html.escape(text, quote=False)


def run_outcomes(rows: Sequence[MetricRow]) -> dict[str, Outcome]:
    """Each run's outcome: written, nothing to write (no commit, no failing check), or blocked by a check."""
    outcomes: dict[str, Outcome] = {}
    for row in rows:
        if row.committed:
            outcomes[row.run_id] = "committed"
        elif row.kind == "check" and row.status == "fail":
            outcomes[row.run_id] = "blocked"
        else:
            outcomes.setdefault(row.run_id, "nothing to write")
    return outcomes


def metric_figures(rows: Sequence[MetricRow]) -> list[go.Figure]:
    """One chart per metric; each run drawn by its outcome."""
    import plotly.graph_objects as go

    outcomes = run_outcomes(rows)
    by_metric: dict[str, list[MetricRow]] = {}
    for row in rows:
        if row.kind == "metric":
            by_metric.setdefault(row.name, []).append(row)
    figures = []
    for metric, points in by_metric.items():
        fig = go.Figure()
        for outcome, (symbol, colour, line) in _OUTCOME_STYLE.items():
            chosen = [p for p in points if outcomes[p.run_id] == outcome]
            if chosen:
                fig.add_trace(
                    go.Scatter(
                        x=[p.run_at for p in chosen], y=[p.value for p in chosen], name=outcome,
                        mode="lines+markers" if line else "markers", text=[_shown(p.run_id) for p in chosen],
                        marker={"symbol": symbol, "color": colour, "size": 9}, line={"color": colour},
                    )
                )  # fmt: skip
        fig.update_layout(
            title=_shown(metric), height=320, margin=_MARGIN, xaxis_title="run time (UTC)", showlegend=True
        )
        figures.append(fig)
    return figures


def checks_figure(rows: Sequence[MetricRow]) -> go.Figure | None:
    """Check outcomes, one row per check and one column per run (``None`` without checks)."""
    import plotly.graph_objects as go

    checks = [row for row in rows if row.kind == "check"]
    if not checks:
        return None
    outcomes = run_outcomes(rows)
    names = list(dict.fromkeys(row.name for row in checks))
    runs = list(dict.fromkeys(row.run_id for row in sorted(checks, key=lambda r: r.run_at)))
    times = {row.run_id: f"{row.run_at:%Y-%m-%d %H:%M:%S}" for row in checks}
    z: list[list[int | None]] = [[None] * len(runs) for _ in names]
    text = [[""] * len(runs) for _ in names]
    for row in checks:
        i, j = names.index(row.name), runs.index(row.run_id)
        z[i][j] = _STATUS_VALUE.get(row.status or "")
        text[i][j] = _shown(f"{row.status}: {row.detail}")
    fig = go.Figure(
        go.Heatmap(
            z=z, x=[f"{times[r]}<br>{_shown(r)}<br>{outcomes[r]}" for r in runs], y=[_shown(n) for n in names], text=text, hoverinfo="text+x+y",
            zmin=0, zmax=2, showscale=False, xgap=2, ygap=2,
            colorscale=[[0, "#2e7d32"], [0.5, "#f9a825"], [1, "#c62828"]],
        )
    )  # fmt: skip
    fig.update_layout(
        title="check outcomes (green pass, amber warn, red fail)",
        height=_MARGIN["t"] + _MARGIN["b"] + _CHECK_ROW_PX * len(names),
        margin=_MARGIN,
        xaxis={"type": "category", "title": "run (UTC)"},
        yaxis={"type": "category", "automargin": True},
    )
    return fig


def versions_table(versions: Sequence[TableVersion]) -> str:
    """The table's versions as an HTML table."""
    rows = [
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in v.cells()) + "</tr>" for v in versions
    ]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in VERSION_COLUMNS)
    return f"<table class='versions'><tr>{head}</tr>{''.join(rows)}</table>"


def render(name: str, rows: Sequence[MetricRow], versions: Sequence[TableVersion]) -> str:
    """The report's HTML page (plotly.js inlined once)."""
    figures = metric_figures(rows)
    checks = checks_figure(rows)
    if checks is not None:
        figures.append(checks)
    parts = [fig.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, fig in enumerate(figures)]
    title = html.escape(name)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title} quality report</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px}</style>"
        f"</head><body><h1>{title}</h1><h2>Versions</h2>{versions_table(versions)}"
        f"<h2>Metrics and checks</h2>{''.join(parts)}</body></html>"
    )


def write_report(
    table: str, output: str | Path, spark: SparkSession | None = None, settings: ThimbleSettings | None = None
) -> Path:
    """Write ``output`` (HTML, plotly.js inlined) with the metric history and check outcomes of ``table``."""
    from pyspark.sql import functions as F

    settings = settings if settings is not None else load_settings(EtlSettings)
    name = _tables.argument(table, settings, "write_report")
    path = Path(output)
    _writable(path)  # before any Spark job: a report that cannot be written is not worth reading for
    if spark is None:
        from thimble.common.spark import build_spark_session

        spark = build_spark_session(settings, app_name="thimble-etl")
    etl = getattr(settings, "etl", None)
    metrics_table = _tables.qualified(etl.metrics_table if etl else "thimble_quality", settings)
    if not _tables.exists(spark, metrics_table):
        raise TableNotFoundError(f"no quality metrics recorded yet ({metrics_table} does not exist)")
    collected = spark.table(metrics_table).filter(F.col("table") == name).orderBy("run_at").collect()
    if not collected:
        raise TableNotFoundError(f"no quality metrics recorded for '{name}'")
    rows = [_metric_row(row.asDict()) for row in collected]
    versions = history(table, spark=spark, settings=settings) if _tables.exists(spark, name) else []
    try:
        path.write_text(render(name, rows, versions), encoding="utf-8")
    except OSError as exc:
        raise EtlError(f"cannot write the report to {path}: {exc.strerror or exc}") from None
    return path


def _writable(path: Path) -> None:
    """Create ``path``'s folder; ``EtlError`` naming the path when the report cannot be written there."""
    problem = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        problem = "a part of its folder is a file"
    except OSError as exc:
        problem = exc.strerror or str(exc)
    else:
        if path.is_dir():
            problem = "it is a folder"
        elif not os.access(path if path.exists() else path.parent, os.W_OK):
            problem = "permission denied"
    if problem:
        raise EtlError(f"cannot write the report to {path}: {problem}")


def _metric_row(row: Mapping[str, Any]) -> MetricRow:
    return MetricRow(
        run_id=row["run_id"], run_at=as_utc(row["run_at"]), committed=bool(row["committed"]),
        kind=row["kind"], name=row["name"], value=row["value"], status=row["status"], detail=row["detail"] or "",
    )  # fmt: skip
