"""History and report of a real journal: the rows a run changed, checks as counts, times in UTC."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from typer.testing import CliRunner

from thimble.common.config import ThimbleSettings
from thimble.etl import cli, history, run_table
from thimble.etl.report import write_report

from .conftest import config
from .test_integration_etl_cli import _settings_file

pytestmark = pytest.mark.integration


def _run(table: str, path: str, spark: SparkSession, settings: ThimbleSettings) -> str:
    result = run_table(
        config(
            table=table,
            source={"type": "files", "path": path, "format": "json"},
            schema_={"columns": {"id": "string", "amount": "double"}},
            quality={"metrics": [{"metric": "row_count"}], "checks": [{"metric": "row_count", "min": 1}]},
            journal={"keys": ["id"]},
            write={"mode": "journal"},
        ),
        spark=spark,
        settings=settings,
    )
    return result.status


def test_history_and_report_show_the_rows_a_run_changed(
    spark: SparkSession,
    spark_settings: ThimbleSettings,
    table_name: str,
    json_source: Callable[..., str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = json_source([{"id": f"k{i}", "amount": float(i)} for i in range(3)])
    assert _run(table_name, path, spark, spark_settings) == "committed"
    json_source([{"id": "k0", "amount": 0.0}, {"id": "k1", "amount": 10.0}, {"id": "k2", "amount": 2.0}])
    assert _run(table_name, path, spark, spark_settings) == "committed"

    latest = history(table_name, spark=spark, settings=spark_settings)[0]
    assert (latest.inserted, latest.updated, latest.closed) == (0, 1, 0)
    assert latest.rows_changed == 1
    assert latest.rows_written is not None
    assert latest.rows_written > latest.rows_changed  # Delta counts the rows it rewrote, not the change
    assert latest.checks_text() == "1 pass, 0 warn, 0 fail"
    assert str(latest.timestamp.tzinfo) == "UTC"

    monkeypatch.setattr(cli.out, "width", 200)
    settings_file = str(_settings_file(tmp_path, spark_settings))
    listed = CliRunner().invoke(cli.app, ["history", table_name, "--config", settings_file])
    assert listed.exit_code == 0, listed.output
    header = next(line for line in listed.output.splitlines() if "version" in line)
    assert "rows changed" in header
    assert "time (UTC)" in header
    update = next(line for line in listed.output.splitlines() if "MERGE" in line)
    assert [cell.strip() for cell in update.split("│")[5:10]] == [
        "1",
        "0",
        "1",
        "0",
        "1 pass, 0 warn, 0 fail",
    ]

    page = write_report(
        table_name, tmp_path / "report.html", spark=spark, settings=spark_settings
    ).read_text()
    assert "<th>rows changed</th>" in page
    assert "<td>1 pass, 0 warn, 0 fail</td>" in page
