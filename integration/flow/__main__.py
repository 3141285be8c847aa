"""``python -m integration.flow``: the platform end to end on the running local stack.

Produces a day of synthetic client events, consumes them into features and A/B assignments, loads the
warehouse, trains and serves a model, scores every client on Spark, and prints what each stage did.
Run it again to append the next day.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated

import typer
from rich.console import Console

from integration.flow.errors import FlowError
from thimble.common.cli import user_errors
from thimble.common.config import load_settings

app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[1] if __doc__ else None)


@app.command()
def main(
    count: Annotated[int, typer.Option(min=1, help="Events to generate.")] = 5_000,
    clients: Annotated[int, typer.Option(min=1, help="Size of the client population.")] = 500,
    rate: Annotated[float, typer.Option(min=0, help="Events per second; 0: as fast as possible.")] = 2_500.0,
    day: Annotated[
        datetime | None,
        typer.Option(
            formats=["%Y-%m-%d"], help="UTC day of the events (default: the day after the last run's)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed of the generator.")] = 7,
    bad_ratio: Annotated[
        float, typer.Option(min=0, max=1, help="Share of malformed or invalid events.")
    ] = 0.005,
    ab_split: Annotated[str, typer.Option(help="A/B arms and weights.")] = "control=50,treatment=50",
    timeout: Annotated[float, typer.Option(min=1, help="Seconds the consumers get to catch up.")] = 300.0,
    serve: Annotated[
        bool,
        typer.Option("--serve/--no-serve", help="Keep the model server and the dashboard up until Ctrl-C."),
    ] = False,
    config: Annotated[
        str | None, typer.Option("--config", "-c", help="Thimble settings file (else $THIMBLE_CONFIG).")
    ] = None,
) -> None:
    """Run the whole flow and print a summary."""
    from integration.flow.ab_test import parse_split
    from integration.flow.pipeline import Flow, FlowConfig, FlowSettings
    from integration.flow.summary import render

    @user_errors
    def run() -> None:
        console = Console(highlight=False)
        started = time.monotonic()
        try:
            parse_split(ab_split)
        except ValueError as exc:
            raise FlowError(str(exc)) from None
        settings = load_settings(FlowSettings, config)
        flow_config = FlowConfig(
            count=count, clients=clients, rate=rate or None, day=day.date() if day else None, seed=seed,
            bad_ratio=bad_ratio, ab_split=ab_split, timeout_s=timeout,
        )  # fmt: skip
        flow = Flow(flow_config, settings, console)
        console.rule(f"[bold]Thimble end to end[/]: {count:,} client events of {flow.report.day}")
        try:
            report = flow.run(keep_serving=serve)
        except KeyboardInterrupt:
            raise FlowError("interrupted; every process the flow started was stopped") from None
        render(report, console, time.monotonic() - started)
        if serve:
            try:
                dashboard = flow.serve_dashboard()
                console.print(
                    f"serving [bold]{report.server_url}[/] (predict: /v1/models/return-risk@prod/predict, "
                    f"metrics: /metrics, API docs: /docs) and the dashboard at [bold]{dashboard}[/]; Ctrl-C stops"
                )
                assert flow.server is not None
                flow.server.popen.wait()
            except KeyboardInterrupt:
                console.print("stopping")
            finally:
                flow.close()

    run()


if __name__ == "__main__":
    app()
