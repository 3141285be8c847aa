"""Export a run's outcome as Prometheus metrics (node-exporter textfile or Pushgateway), for batch schedulers."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from thimble.common.config import ThimbleSettings
from thimble.common.metrics import Metrics, push, write_textfile
from thimble.etl.runner import RunResult


def export_run(result: RunResult, settings: ThimbleSettings) -> None:
    """Write ``thimble_etl_*`` gauges for ``result`` where ``settings.metrics`` says (no-op when neither is set)."""
    config = settings.metrics
    if not config.enabled or not (config.textfile_dir or config.pushgateway_url):
        return
    registry = CollectorRegistry()
    metrics = Metrics("etl", registry)
    labels = ["table"]
    rows = metrics.gauge("run", "rows", "Rows of the last run by stage", [*labels, "stage"])
    for stage, value in (
        ("read", result.rows_read),
        ("cleansed", result.rows_cleansed),
        ("quarantined", result.rows_quarantined),
        ("inserted", result.inserted),
        ("updated", result.updated),
        ("closed", result.closed),
    ):
        rows.labels(result.table, stage).set(value)
    metrics.gauge("run_duration", "seconds", "Wall time of the last run", labels).labels(result.table).set(
        result.seconds
    )
    checks = metrics.gauge("checks", "total", "Checks of the last run by status", [*labels, "status"])
    for status, count in result.check_counts.items():
        checks.labels(result.table, status).set(count)
    metrics.gauge("run_committed", "info", "1 when the last run wrote a new version", labels).labels(
        result.table
    ).set(1 if result.committed else 0)
    if config.textfile_dir:
        Path(config.textfile_dir).mkdir(parents=True, exist_ok=True)
        name = result.table.replace(".", "_")
        write_textfile(Path(config.textfile_dir) / f"thimble_etl_{name}.prom", registry)
    if config.pushgateway_url:
        push(config.pushgateway_url, job=f"thimble-etl-{result.table}", registry=registry)
