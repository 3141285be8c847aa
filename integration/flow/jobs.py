"""The flow's batch half as one job, for schedulers and docker compose: warehouse tables, model, scores.

    python -m integration.flow.jobs --wait

With ``--wait`` it first waits until both consumer apps have committed every event on the events topic
(so every landed file is complete), then loads the four warehouse tables, trains and saves the model
(alias ``prod``), and batch-scores every client.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.console import Console

from integration.flow import _services as svc
from integration.flow.pipeline import CONSUMERS, Flow, FlowConfig, FlowSettings, consumed
from thimble.common.cli import user_errors
from thimble.common.config import load_settings
from thimble.consumer import TopicMissingError

app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0] if __doc__ else None)


def consumers_caught_up(settings: FlowSettings) -> bool:
    """Some events exist and no consumer app lags behind them."""
    try:
        progress = [consumed(settings, app) for app in CONSUMERS]
    except TopicMissingError:
        return False
    return all(done > 0 and lag == 0 for done, lag in progress)


@app.command()
def main(
    wait: Annotated[bool, typer.Option(help="Wait until the consumers have caught up first.")] = False,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for the consumers.")] = 900.0,
    config: Annotated[str | None, typer.Option("--config", "-c", help="Thimble settings file.")] = None,
) -> None:
    """Load the warehouse, train and save the model, score every client."""
    from integration.flow.summary import render

    @user_errors
    def run() -> None:
        console = Console(highlight=False)
        started = time.monotonic()
        settings = load_settings(FlowSettings, config)
        flow = Flow(FlowConfig(), settings, console)
        if wait:
            with flow.stage("waiting", "the consumers have committed every event"):
                svc.wait_for(
                    lambda: consumers_caught_up(settings), timeout, "the consumers to commit every event"
                )
        flow.load_warehouse()
        flow.train_model()
        flow.score_batch()
        render(flow.report, console, time.monotonic() - started)

    run()


if __name__ == "__main__":
    app()
