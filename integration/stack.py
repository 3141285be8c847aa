"""The local stack: a Kafka broker (KRaft), Redis and a Spark Connect server on loopback, plus their jars.

    python integration/stack.py jars | up [--kafka-brokers N] [--spark-workers N] [--warm] | status
                                | down [SERVICE] | logs [kafka|redis|spark] [-f]

Every file (jars, data, logs, pid files) lives under ``THIMBLE_RUN_DIR`` (default ``<repo>/.run``). Ports:
``THIMBLE_STACK_KAFKA_PORT`` (9092; the controller takes the next one), ``THIMBLE_STACK_REDIS_PORT`` (6379).
``up --kafka-brokers 3`` (or ``THIMBLE_STACK_KAFKA_BROKERS=3``) runs a three-node KRaft cluster instead:
node *i* on ``THIMBLE_STACK_KAFKA_PORT + 2i`` (its controller on the next port), replication 3 and
``min.insync.replicas=2`` by default; ``status``, ``down`` and ``logs kafka`` then cover every node.
``THIMBLE_STACK_JARS_DIR`` (default ``$THIMBLE_RUN_DIR/jars``) lets a second stack reuse the first one's jars.

Spark Connect listens on ``THIMBLE_STACK_SPARK_PORT`` (15002): point Thimble at it with
``THIMBLE_SPARK__REMOTE=sc://127.0.0.1:15002``. It owns the warehouse (``$THIMBLE_RUN_DIR/warehouse``) and
its metastore, and runs the work in its own JVM; ``up --spark-workers N`` (or ``THIMBLE_STACK_SPARK_WORKERS``)
runs it on a standalone master (``THIMBLE_STACK_SPARK_MASTER_PORT``, 7077; its web UI on the next port) and N
one-core workers (on the ports after it) instead. ``THIMBLE_STACK_SPARK=0`` leaves Spark's services out.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script (`python integration/stack.py`): make the `integration` package importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from integration import _jars, _stack
from integration._procs import tail
from integration._service import State
from integration._settings import StackSettings
from thimble.common.cli import user_errors

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help=__doc__.split("\n\n")[0] if __doc__ else None
)
console = Console(highlight=False)

_STATE_STYLE = {State.UP: "green", State.STARTING: "yellow", State.DOWN: "red"}


@app.command()
@user_errors
def jars(
    force: bool = typer.Option(False, "--force", help="Resolve again even when the stamp is current."),
) -> None:
    """Resolve the Kafka broker's and Spark's jars with Maven (skipped when already done)."""
    settings = StackSettings.from_env()
    for bundle in _jars.BUNDLES:
        t0 = time.monotonic()
        outcome = _jars.resolve(settings, bundle, force=force)
        if outcome.skipped:
            console.print(f"{bundle} jars: up to date ({len(outcome.jars)} jars in {outcome.target})")
            continue
        where = "Maven Central" if outcome.online else "the local Maven repository"
        console.print(
            f"{bundle} jars: resolved from {where} in {time.monotonic() - t0:.1f}s: "
            f"{len(outcome.jars)} jars in {outcome.target}"
        )
        if outcome.dropped:
            console.print(
                f"  dropped {len(outcome.dropped)} that pyspark already ships: {', '.join(outcome.dropped)}",
                soft_wrap=True,
            )


@app.command()
@user_errors
def up(
    kafka_brokers: int | None = typer.Option(
        None,
        "--kafka-brokers",
        help="Kafka nodes (KRaft, each broker and controller); default 1, or what the running stack has.",
        show_default=False,
    ),
    spark_workers: int | None = typer.Option(
        None,
        "--spark-workers",
        help="Spark standalone workers behind the Connect server (0: none, it runs the work itself); "
        "default 0, or what the running stack has.",
        show_default=False,
    ),
    warm: bool = typer.Option(
        False,
        "--warm",
        help="Also wait until the Spark Connect server's warm-up has finished (when one runs), so that "
        "the next job finds it warm.",
    ),
) -> None:
    """Start Kafka, Redis and Spark (a no-op for those already up) and wait until each answers."""
    settings = StackSettings.from_env(kafka_brokers, spark_workers)
    _stack.up(settings, console, settle=warm)
    _print_addresses(settings)


@app.command()
@user_errors
def down(
    service: str | None = typer.Argument(
        None, help="Stop only this service: spark (the Connect server, master and workers), redis, kafka…"
    ),
) -> None:
    """Stop every service, or one; nothing of it is left running (a no-op when already down)."""
    _stack.down(StackSettings.from_env(), console, service)


@app.command()
@user_errors
def status() -> None:
    """Show each service; exit 1 when any is not up."""
    settings = StackSettings.from_env()
    rows = _stack.statuses(settings)
    table = Table(title=f"Thimble stack in {settings.run_dir}", title_justify="left")
    for column in ("service", "state", "pid", "address", "detail"):
        table.add_column(column)
    for row in rows:
        style = _STATE_STYLE[row.state]
        table.add_row(
            row.name, f"[{style}]{row.state.value}[/]", str(row.pid or ""), row.address, escape(row.detail)
        )
    console.print(table)
    if any(row.state is not State.UP for row in rows):
        raise typer.Exit(1)


@app.command()
@user_errors
def logs(
    service: str | None = typer.Argument(
        None,
        help="kafka (every node), kafka-N (one node of a cluster), redis, spark (Connect server, master and "
        "workers) or spark-master, spark-worker-N (default: all).",
    ),
    lines: int = typer.Option(40, "-n", "--lines", min=1, help="How many of the last lines to show."),
    follow: bool = typer.Option(False, "-f", "--follow", help="Keep printing new lines (Ctrl-C stops)."),
) -> None:
    """Print the last lines of a service's log (under $THIMBLE_RUN_DIR/logs)."""
    settings = StackSettings.from_env()
    paths = _stack.log_paths(settings, service)
    for name, path in paths:
        console.rule(f"{name}: {path}")
        text = tail(path, lines)
        print(text if text else "(no log yet)")
    if follow:
        _follow(paths)


def _follow(paths: list[tuple[str, Path]]) -> None:
    offsets = {path: path.stat().st_size if path.exists() else 0 for _, path in paths}
    prefix = len(paths) > 1
    try:
        while True:
            for name, path in paths:
                if not path.exists():
                    continue
                size = path.stat().st_size
                if size < offsets[path]:
                    offsets[path] = 0
                if size > offsets[path]:
                    with open(path, "rb") as handle:
                        handle.seek(offsets[path])
                        chunk = handle.read().decode(errors="replace")
                        offsets[path] = handle.tell()
                    for line in chunk.splitlines():
                        print(f"{name} | {line}" if prefix else line, flush=True)
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass


def _print_addresses(settings: StackSettings) -> None:
    spark = ""
    if settings.spark:
        behind = (
            f"{settings.spark_workers} worker(s) of {settings.spark_master_url}"
            if settings.spark_workers
            else "local[2]"
        )
        spark = f"Spark  THIMBLE_SPARK__REMOTE=sc://127.0.0.1:{settings.spark_port}   ({behind})\n"
    console.print(
        f"Kafka  bootstrap.servers={settings.bootstrap_servers}\n"
        f"Redis  redis://127.0.0.1:{settings.redis_port}/0\n"
        f"{spark}"
        f"logs   {settings.logs_dir}   (`integration/stack.py logs \\[kafka|redis|spark]`)"
    )


if __name__ == "__main__":
    app()
