"""The end-of-flow summary: what each stage did, in a few rich tables."""

from __future__ import annotations

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from integration.flow.events import names
from integration.flow.pipeline import PREDICTION_LOG_TABLE, PREDICTIONS_TABLE, FlowReport
from integration.flow.train import MODEL_NAME


def _counts(report: FlowReport) -> Table:
    table = Table(title="counts per stage", title_justify="left")
    table.add_column("stage")
    table.add_column("count", justify="right")
    table.add_column("detail")
    produced = report.produced
    if produced is not None:
        table.add_row(
            "events produced", f"{produced.produced:,}",
            f"{produced.valid:,} valid, {produced.kinds['malformed']} malformed, {produced.kinds['invalid']} invalid; "
            f"{produced.clients:,} clients",
        )  # fmt: skip
    features = report.consumers.get("features")
    if features is not None:
        balanced = produced is not None and produced.produced == features.outputs + features.dead_letters
        check = (
            "[green]processed + dead-lettered = produced[/]" if balanced else "[red]events lost or doubled[/]"
        )
        table.add_row("features processed", f"{features.outputs:,}", "to Redis, a topic and landing files")
        table.add_row("features dead-lettered", f"{features.dead_letters:,}", check)
    ab = report.consumers.get("ab-test")
    if ab is not None:
        table.add_row(
            "A/B arms assigned", f"{ab.outputs:,}", "new clients, to Redis, a topic and landing files"
        )
        table.add_row("A/B dead-lettered", f"{ab.dead_letters:,}", "not JSON, or no client id")
    for name, result in report.tables.items():
        table.add_row(
            f"{name} rows read", f"{result.rows_read:,}", f"{result.rows_quarantined:,} quarantined"
        )
    if report.skew is not None:
        sk = report.skew
        verdict = (
            "[green]no skew[/]" if not sk.skewed else f"[red]{len(sk.skewed)} skewed ({sk.share:.1%})[/]"
        )
        table.add_row(
            "clients compared online/warehouse", f"{sk.entities:,}",
            f"{verdict}, {len(sk.online_newer)} newer online (lag)",
        )  # fmt: skip
    if report.batch is not None:
        table.add_row("clients scored in batch", f"{report.batch.rows:,}", f"into {PREDICTIONS_TABLE}")
    logged = report.tables.get(PREDICTION_LOG_TABLE)
    if logged is not None:
        table.add_row(
            "served predictions logged", f"{logged.inserted:,}",
            f"from {names.predictions_topic} into {PREDICTION_LOG_TABLE}",
        )  # fmt: skip
    return table


def _tables(report: FlowReport) -> Table:
    table = Table(title="warehouse tables", title_justify="left")
    for column in ("table", "status", "version", "inserted/updated/closed", "checks ✓/!/✗"):
        table.add_column(column, justify="left" if column in ("table", "status") else "right")
    for name, r in report.tables.items():
        colour = {"committed": "green", "blocked": "red"}.get(r.status, "yellow")
        before = "new" if r.previous_version is None else str(r.previous_version)
        version = f"{before} → {r.version}" if r.committed else f"{r.version} (unchanged)"
        c = r.check_counts
        table.add_row(
            name, f"[{colour}]{r.status}[/]", version, f"{r.inserted:,}/{r.updated:,}/{r.closed:,}",
            f"{c['pass']}/{c['warn']}/{c['fail']}",
        )  # fmt: skip
    return table


def _quality(report: FlowReport) -> Table:
    table = Table(title="quality checks", title_justify="left")
    table.add_column("table")
    table.add_column("check")
    table.add_column("result")
    for name, r in report.tables.items():
        for check in r.checks:
            colour = {"pass": "green", "warn": "yellow"}.get(check.status, "red")
            table.add_row(name, check.name, f"[{colour}]{check.status}[/] {check.detail}")
    return table


def _predictions(report: FlowReport) -> Table:
    table = Table(title="sample predictions: served by client id, and in batch", title_justify="left")
    for column in ("client", "served", "band", "batch", "model", "same"):
        table.add_column(column, justify="left" if column in ("client", "band") else "right")
    for row in report.served:
        batch = report.batch_sample.get(row["client_id"], {})
        batch_risk = batch.get("return_risk")
        same = batch_risk is not None and abs(batch_risk - row["return_risk"]) < 1e-9
        table.add_row(
            row["client_id"], f"{row['return_risk']:.4f}", row["band"],
            "-" if batch_risk is None else f"{batch_risk:.4f}", f"v{row['model_version']}",
            "[green]yes[/]" if same else "[red]no[/]",
        )  # fmt: skip
    return table


def _facts(report: FlowReport, wall_s: float) -> Table:
    table = Table(show_header=False, box=None)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    if report.model is not None:
        metrics = ", ".join(f"{k} {v:.3f}" for k, v in report.model.metrics.items() if k != "clients")
        table.add_row(
            "model", f"{report.model.info.ref} = prod, trained on {report.model.training_data} ({metrics})"
        )
    if report.batch is not None:
        b = report.batch
        table.add_row(
            "batch", f"{b.output_table} v{b.output_version} from {b.input_table} v{b.input_version}"
        )
    first = report.first_event_to_prediction_s
    if first is not None:
        table.add_row("first event → prediction", f"{first:.1f} s")
    table.add_row("wall time", f"{wall_s:.1f} s")
    for service, address in report.stack.items():
        table.add_row(service, address)
    if report.server_url:
        table.add_row("serve", "thimble-modelops serve return-risk@prod  (/metrics, /docs)")
    table.add_row("dashboard", "thimble-modelops dashboard  →  http://127.0.0.1:8090")
    table.add_row("quality", "thimble-etl report client_features -o client_features.html")
    table.add_row(
        "skew",
        f"thimble-modelops skew {names.feature_set} --entity-key client_id --event-time event_time",
    )
    table.add_row("lineage", f"thimble-modelops lineage {MODEL_NAME}@prod  (tables, versions, event offsets)")
    if PREDICTION_LOG_TABLE in report.tables:
        table.add_row(
            "prediction log",
            f"thimble-modelops prediction-table {MODEL_NAME}@prod --topic {names.predictions_topic} -o log.yaml"
            "  →  thimble-etl run log.yaml",
        )
    table.add_row(
        "consumers", f"thimble-consumer lag integration.flow.features:app; dead letters: {names.features_dlq}"
    )
    if report.logs is not None:
        table.add_row("logs", str(report.logs))
    return table


def render(report: FlowReport, console: Console, wall_s: float) -> None:
    """Print the summary of a finished flow."""
    console.print()
    console.print(_counts(report))
    console.print(_tables(report))
    console.print(_quality(report))
    if report.served:
        console.print(_predictions(report))
    console.print(Panel(_facts(report, wall_s), title=f"day {report.day} done", expand=False))
