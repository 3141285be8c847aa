"""``thimble-etl``: run, check, and inspect warehouse tables described by YAML configs."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from thimble.common.cli import TerminalConsole, user_errors
from thimble.common.config import load_settings
from thimble.common.errors import spark_failure
from thimble.common.logging import configure_logging
from thimble.etl.__about__ import __version__
from thimble.etl.config import EtlSettings, TableConfig, load_table_config
from thimble.etl.errors import EtlError, SparkJobError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from thimble.etl.runner import RunResult

app = typer.Typer(
    help="Config-driven Spark jobs writing Thimble's Delta Lake warehouse.", no_args_is_help=True
)
# Everything printed holds text from the data or the config (records, column and check names, paths):
# printed as written, never read as rich markup (``[/]`` would raise) or emoji codes (``quantile:a:0.5``).
out = TerminalConsole(markup=False, emoji=False)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="Thimble settings file (warehouse, spark, kafka); or THIMBLE_CONFIG."
    ),
]
EXIT_BLOCKED = 3
# Spark's limit is a Java int: a larger one failed as "the connection to Spark's JVM was lost".
ROWS_MAX = 2**31 - 1


def _settings(config: Path | None) -> EtlSettings:
    settings = load_settings(EtlSettings, config_file=config)
    configure_logging("etl", __version__, settings.logging.level, settings.logging.format)
    return settings


def _spark(settings: EtlSettings) -> SparkSession:
    from thimble.common.spark import build_spark_session

    return build_spark_session(settings, app_name="thimble-etl")


@contextmanager
def spark_failures_in(file: Path, table_config: TableConfig) -> Iterator[None]:
    """Report a Spark failure naming the config file and the fields it points at."""
    try:
        yield
    except SparkJobError as exc:
        raise exc.located(file, table_config) from None
    except Exception as exc:
        failure = spark_failure(exc)
        if failure is None:
            raise
        raise SparkJobError(table_config.table, failure).located(file, table_config) from None


def _version_change(result: RunResult) -> str:
    if not result.committed:
        return "no table yet" if result.version is None else f"{result.version} (unchanged)"
    before = "new table" if result.previous_version is None else str(result.previous_version)
    return f"{before} -> {result.version}"


def summary_table(result: RunResult) -> Table:
    """The end-of-run summary."""
    checks = result.check_counts
    table = Table(title=f"{result.table} — {result.status}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("", justify="right")
    rows = [
        ("run id", result.run_id),
        ("source", result.source),
        ("rows read", f"{result.rows_read:,}"),
        ("rows after cleanse", f"{result.rows_cleansed:,}"),
        ("rows quarantined", f"{result.rows_quarantined:,}"),
        ("inserted / updated / closed", f"{result.inserted:,} / {result.updated:,} / {result.closed:,}"),
        ("checks pass / warn / fail", f"{checks['pass']} / {checks['warn']} / {checks['fail']}"),
        ("version", _version_change(result)),
        ("time", f"{result.seconds:.1f} s"),
    ]
    for key, value in rows:
        table.add_row(key, value)
    return table


@app.command()
@user_errors
def run(
    file: Annotated[Path, typer.Argument(help="The table's YAML config.")],
    config: ConfigOption = None,
    run_id: Annotated[str | None, typer.Option(help="Run id to record (default: generated).")] = None,
    progress: Annotated[bool, typer.Option(help="Show live progress.")] = True,
) -> None:
    """Load one table: read, cleanse, validate, check quality, write one Delta commit (or none)."""
    from thimble.etl._progress import SparkProgress
    from thimble.etl._prometheus import export_run
    from thimble.etl.runner import run_table

    table_config = load_table_config(file)
    settings = _settings(config)
    spark = _spark(settings)
    with spark_failures_in(file, table_config):
        if progress:
            with SparkProgress(spark) as bar:
                result = run_table(table_config, spark=spark, settings=settings, run_id=run_id, progress=bar)
        else:
            result = run_table(table_config, spark=spark, settings=settings, run_id=run_id)
    export_run(result, settings)
    out.print(summary_table(result))
    for check in result.checks:
        if check.status != "pass":
            colour = "red" if check.status == "fail" else "yellow"
            out.print(Text(check.status, style=colour), f": {check.name}: {check.detail}", sep="")
    if result.status == "blocked":
        out.print(
            f"a failing check blocked the write; {result.table} stays at version {result.version}",
            style="red",
        )
        raise typer.Exit(EXIT_BLOCKED)


@app.command()
@user_errors
def check(
    file: Annotated[Path, typer.Argument(help="The table's YAML config.")],
    against_source: Annotated[
        bool, typer.Option(help="Also check column names and types against the source.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Validate a table config without running a job."""
    from thimble.etl._columns import check_columns
    from thimble.etl.errors import ConfigError

    table_config = load_table_config(file)
    problems: list[str] = []
    if table_config.schema_.columns and not against_source:
        problems = check_columns(table_config, dict(table_config.schema_.columns))
    if against_source:
        from thimble.etl.sources import source_types

        settings = _settings(config)
        with spark_failures_in(file, table_config):
            types = source_types(_spark(settings), table_config, settings)
        problems = check_columns(table_config, types)
    if problems:
        raise ConfigError(problems, source=str(file))
    out.print(
        Text("ok", style="green"), f": {file} ({table_config.table}, {table_config.write.mode})", sep=""
    )


@app.command()
@user_errors
def history(
    table: Annotated[str, typer.Argument(help="Table name (database.name or name).")],
    config: ConfigOption = None,
) -> None:
    """List the table's versions with run ids, counts and check results."""
    from thimble.etl.history import VERSION_COLUMNS, blocked_runs
    from thimble.etl.history import history as table_history

    settings = _settings(config)
    spark = _spark(settings)
    # Two independent reads (the table's log, the metrics table): the second need not wait for the first.
    with ThreadPoolExecutor(max_workers=1) as pool:
        blocked_read = pool.submit(blocked_runs, table, spark=spark, settings=settings)
        versions = table_history(table, spark=spark, settings=settings)
        blocked = blocked_read.result()
    view = Table(title=table)
    for column in VERSION_COLUMNS:
        view.add_column(column)
    for v in versions:
        view.add_row(*v.cells())
    out.print(view)
    if blocked:
        runs = Table(title="runs that wrote nothing (blocked by a failing check)")
        for column in ("run id", "time (UTC)", "table version", "failed checks"):
            runs.add_column(column)
        for run_id, at, version, failed in blocked:
            runs.add_row(run_id, f"{at:%Y-%m-%d %H:%M:%S}", "" if version is None else str(version), failed)
        out.print(runs)


@app.command()
@user_errors
def changes(
    table: Annotated[str, typer.Argument(help="Table name.")],
    since: Annotated[int, typer.Option("--since", help="Show what changed after this version.")],
    limit: Annotated[int, typer.Option(min=0, max=ROWS_MAX, help="Rows to print.")] = 50,
    output: Annotated[
        Path | None, typer.Option(help="Write every change as Parquet here instead of printing.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """What changed since a version (Delta change data feed), with totals per change type."""
    from thimble.etl.history import change_totals
    from thimble.etl.history import changes as table_changes

    if output is not None:
        _replaceable(output)
    settings = _settings(config)
    df = table_changes(table, since, spark=_spark(settings), settings=settings)
    totals = change_totals(df)
    summary = ", ".join(f"{n:,} {kind}" for kind, n in totals.items())
    if output is not None:
        df.write.mode("overwrite").parquet(str(output))
        out.print(f"wrote changes since version {since} to {output}")
        out.print(f"total: {sum(totals.values()):,} rows ({summary})")
        return
    meta = ["_commit_version", "_change_type"]
    columns = meta + [c for c in df.columns if c not in (*meta, "_commit_timestamp")]
    rows = df.select(*columns).orderBy("_commit_version").limit(limit).collect()
    view = Table(title=f"{table}: changes since version {since}")
    for column in columns:
        view.add_column(column.removeprefix("_commit_").removeprefix("_change_"), overflow="fold")
    for row in rows:
        view.add_row(*("" if v is None else str(v) for v in row))
    out.print(view)
    out.print(f"total: {sum(totals.values()):,} rows ({summary})")


# What a Parquet write of Spark leaves in its folder; a folder holding anything else is not a previous output.
_SPARK_OUTPUT = re.compile(r"\.?(part-.*|_SUCCESS|_committed_.*|_started_.*)(\.crc)?")


def _replaceable(output: Path) -> None:
    """Refuse an ``--output`` whose replacement would delete the user's files: Spark's overwrite deletes
    the whole path first (a file, or a folder and all it holds)."""
    if output.is_dir():
        foreign = sorted(p.name for p in output.iterdir() if not _SPARK_OUTPUT.fullmatch(p.name))
        if foreign:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise EtlError(
                f"--output {output}: the folder holds files no Spark write made ({shown}); writing would "
                "delete them: give a new or empty folder"
            )
    elif output.exists() or output.is_symlink():
        raise EtlError(f"--output {output} is a file; writing would delete it: give a new or empty folder")


@app.command()
@user_errors
def report(
    table: Annotated[str, typer.Argument(help="Table name.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML file to write.")] = Path("report.html"),
    config: ConfigOption = None,
) -> None:
    """Write an HTML report with the history of the table's metrics and check outcomes."""
    from thimble.etl.report import write_report

    settings = _settings(config)
    path = write_report(table, output, settings=settings)  # its Spark session once the output is writable
    out.print(f"wrote {path}")


@app.command()
@user_errors
def quarantine(
    table: Annotated[str, typer.Argument(help="Table name.")],
    run_id: Annotated[str | None, typer.Option(help="Only this run's rows.")] = None,
    limit: Annotated[int, typer.Option(min=0, max=ROWS_MAX, help="Latest rows to print.")] = 20,
    config: ConfigOption = None,
) -> None:
    """What the table's runs quarantined: counts per rule, and the latest rows with their reasons."""
    from thimble.etl.quarantine import quarantine_summary

    settings = _settings(config)
    summary = quarantine_summary(table, spark=_spark(settings), settings=settings, run_id=run_id, limit=limit)
    scope = f" by run {run_id}" if run_id else ""
    out.print(
        f"{summary.table}: {summary.rows:,} rows quarantined{scope} in {summary.runs:,} run(s) "
        f"({summary.quarantine_table})",
        highlight=False,
    )
    if not summary.rows:
        return
    rules = Table(title="rows per rule")
    for column in ("rule", "rows", "runs", "last (UTC)"):
        rules.add_column(column, overflow="fold")
    for count in summary.rules:
        rules.add_row(count.rule, f"{count.rows:,}", f"{count.runs:,}", f"{count.last_at:%Y-%m-%d %H:%M:%S}")
    out.print(rules)
    latest = Table(title=f"latest {len(summary.latest)} row(s)")
    for column in ("run id", "quarantined (UTC)", "failed rules", "record"):
        latest.add_column(column, overflow="fold")
    for row in summary.latest:
        latest.add_row(
            row.run_id, f"{row.quarantined_at:%Y-%m-%d %H:%M:%S}", "; ".join(row.failed_rules), row.record
        )
    out.print(latest)
