"""The thimble-etl command line, in-process (the test Spark session is reused)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pyspark.sql import SparkSession
from typer.testing import CliRunner

from thimble import etl
from thimble.common.config import ThimbleSettings
from thimble.etl.cli import app

pytestmark = pytest.mark.integration


def _settings_file(tmp_path: Path, settings: ThimbleSettings) -> Path:
    path = tmp_path / "thimble.yaml"
    values = {
        "warehouse": settings.warehouse.model_dump(),
        "spark": {"shuffle_partitions": 2},
        "metrics": {"textfile_dir": str(tmp_path / "prom")},
    }
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.mark.slow
def test_cli_check_run_history_changes_report(
    spark: SparkSession, spark_settings: ThimbleSettings, tmp_path: Path, table_name: str
) -> None:
    source = tmp_path / "clients.json"
    source.write_text("".join(json.dumps({"client_id": f"c{i}", "amount": i}) + "\n" for i in range(3)))
    table = {
        "table": table_name,
        "source": {"type": "files", "path": str(source), "format": "json"},
        "schema": {"columns": {"client_id": "string", "amount": "double"}},
        "quality": {"metrics": [{"metric": "row_count"}], "checks": [{"metric": "row_count", "min": 1}]},
        "journal": {"keys": ["clientid"]},
        "write": {"mode": "journal"},
    }
    file = tmp_path / "table.yaml"
    file.write_text(yaml.safe_dump(table))
    settings = _settings_file(tmp_path, spark_settings)
    runner = CliRunner()

    bad = runner.invoke(app, ["check", str(file)])
    assert bad.exit_code == 2
    assert "journal.keys[0]: no column 'clientid' in the source; did you mean 'client_id'?" in bad.output

    table["journal"] = {"keys": ["client_id"]}
    file.write_text(yaml.safe_dump(table))
    assert (
        runner.invoke(app, ["check", str(file), "--against-source", "--config", str(settings)]).exit_code == 0
    )

    run = runner.invoke(app, ["run", str(file), "--config", str(settings), "--no-progress"])
    assert run.exit_code == 0, run.output
    assert "inserted / updated / closed" in run.output

    assert "3 / 0 / 0" in run.output
    prom = (
        tmp_path / "prom" / f"thimble_etl_{spark_settings.warehouse.database}_{table_name}.prom"
    ).read_text()
    assert 'thimble_etl_run_rows{stage="inserted"' in prom.replace(
        f'table="{spark_settings.warehouse.database}.{table_name}",', ""
    )

    table["quality"] = {"metrics": [{"metric": "row_count"}], "checks": [{"metric": "row_count", "min": 100}]}
    file.write_text(yaml.safe_dump(table))
    blocked = runner.invoke(app, ["run", str(file), "--config", str(settings), "--no-progress"])
    assert blocked.exit_code == 3, blocked.output
    assert "blocked" in blocked.output

    table["quality"]["checks"].append({"metric": "row_count", "max": 1})
    file.write_text(yaml.safe_dump(table))
    twice = runner.invoke(app, ["run", str(file), "--config", str(settings), "--no-progress"])
    assert twice.exit_code == 3, twice.output
    blocked_runs = etl.blocked_runs(table_name, spark=spark, settings=spark_settings)
    assert [version for _, _, version, _ in blocked_runs] == [0, 0]
    assert blocked_runs[0][1] > blocked_runs[1][1]  # newest first
    assert blocked_runs[0][3] == "row_count <= 1: 3 > 1; row_count >= 100: 3 < 100"  # its two failed checks
    assert blocked_runs[1][3] == "row_count >= 100: 3 < 100"

    listed = runner.invoke(app, ["history", table_name, "--config", str(settings)])
    assert listed.exit_code == 0
    assert "CREATE" in listed.output
    assert "blocked by a failing check" in listed.output

    changed = runner.invoke(app, ["changes", table_name, "--since", "-1", "--config", str(settings)])
    assert changed.exit_code == 0
    assert changed.output.count("insert") >= 3

    html = tmp_path / "report.html"
    made = runner.invoke(app, ["report", table_name, "--output", str(html), "--config", str(settings)])
    assert made.exit_code == 0, made.output
    page = html.read_text()
    assert "plotly" in page
    assert "row_count" in page

    missing = runner.invoke(app, ["history", "no_such_table", "--config", str(settings)])
    assert missing.exit_code == 2
    assert "no table" in missing.output
