"""An HTML report of a table: metric history and check outcomes, as self-contained plotly charts."""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thimble.common.config import ThimbleSettings, load_settings
from thimble.etl import _tables
from thimble.etl.config import EtlSettings
from thimble.etl.errors import TableNotFoundError
from thimble.etl.history import history

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

_STATUS_VALUE = {"pass": 0, "warn": 1, "fail": 2}


def write_report(
    table: str, output: str | Path, spark: SparkSession | None = None, settings: ThimbleSettings | None = None
) -> Path:
    """Write ``output`` (HTML, plotly.js inlined) with the metric history and check outcomes of ``table``."""
    import plotly.graph_objects as go
    from pyspark.sql import functions as F

    settings = settings if settings is not None else load_settings(EtlSettings)
    if spark is None:
        from thimble.common.spark import build_spark_session

        spark = build_spark_session(settings, app_name="thimble-etl")
    name = _tables.qualified(table, settings)
    etl = getattr(settings, "etl", None)
    metrics_table = _tables.qualified(etl.metrics_table if etl else "thimble_quality", settings)
    if not _tables.exists(spark, metrics_table):
        raise TableNotFoundError(f"no quality metrics recorded yet ({metrics_table} does not exist)")
    rows = spark.table(metrics_table).filter(F.col("table") == name).orderBy("run_at").collect()
    if not rows:
        raise TableNotFoundError(f"no quality metrics recorded for '{name}'")
    figures = []
    metrics: dict[str, list[tuple[object, float | None, bool, str]]] = {}
    checks: dict[str, list[tuple[object, str, str]]] = {}
    for row in rows:
        if row["kind"] == "metric":
            metrics.setdefault(row["name"], []).append(
                (row["run_at"], row["value"], row["committed"], row["run_id"])
            )
        else:
            checks.setdefault(row["name"], []).append((row["run_at"], row["status"], row["detail"] or ""))
    for metric, points in metrics.items():
        fig = go.Figure()
        for committed, label, symbol in ((True, "committed", "circle"), (False, "not committed", "x")):
            chosen = [p for p in points if bool(p[2]) == committed]
            if chosen:
                fig.add_trace(
                    go.Scatter(
                        x=[p[0] for p in chosen], y=[p[1] for p in chosen], mode="lines+markers" if committed else "markers",
                        name=label, marker={"symbol": symbol}, text=[p[3] for p in chosen],
                    )
                )  # fmt: skip
        fig.update_layout(title=f"{metric}", height=320, margin={"l": 40, "r": 20, "t": 50, "b": 40})
        figures.append(fig)
    if checks:
        names = list(checks)
        runs: list[Any] = sorted({p[0] for points in checks.values() for p in points})
        z: list[list[int | None]] = [[None] * len(runs) for _ in names]
        text = [[""] * len(runs) for _ in names]
        for i, check in enumerate(names):
            for at, status, detail in checks[check]:
                j = runs.index(at)
                z[i][j] = _STATUS_VALUE.get(status)
                text[i][j] = f"{status}: {detail}"
        fig = go.Figure(
            go.Heatmap(
                z=z, x=runs, y=names, text=text, hoverinfo="text+x+y", zmin=0, zmax=2, showscale=False,
                colorscale=[[0, "#2e7d32"], [0.5, "#f9a825"], [1, "#c62828"]],
            )
        )  # fmt: skip
        fig.update_layout(
            title="check outcomes (green pass, amber warn, red fail)", height=120 + 40 * len(names)
        )
        figures.append(fig)
    versions = history(table, spark=spark, settings=settings) if _tables.exists(spark, name) else []
    table_rows = "".join(
        f"<tr><td>{v.version}</td><td>{v.timestamp}</td><td>{html.escape(v.operation)}</td><td>{v.run_id or ''}</td>"
        f"<td>{v.inserted if v.inserted is not None else ''}</td><td>{v.updated if v.updated is not None else ''}</td>"
        f"<td>{v.closed if v.closed is not None else ''}</td><td>{html.escape(str(v.checks or ''))}</td></tr>"
        for v in versions
    )
    parts = [fig.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, fig in enumerate(figures)]
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(name)} quality report</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}</style>"
        f"</head><body><h1>{html.escape(name)}</h1><h2>Versions</h2><table><tr><th>version</th><th>time</th>"
        f"<th>operation</th><th>run id</th><th>inserted</th><th>updated</th><th>closed</th><th>checks</th></tr>{table_rows}</table>"
        f"<h2>Metrics and checks</h2>{''.join(parts)}</body></html>"
    )
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path
