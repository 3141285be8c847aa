"""``thimble-etl quarantine`` and the totals of ``thimble-etl changes``, in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pyspark.sql import SparkSession
from rich.console import Console
from typer.testing import CliRunner

from thimble.common.config import ThimbleSettings
from thimble.etl import cli as etl_cli
from thimble.etl import run_table
from thimble.etl.cli import app
from thimble.etl.journal import CONFLICT_RULE
from thimble.etl.quarantine import quarantine_summary

from .conftest import config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_quarantine_counts_per_rule_and_changes_totals(
    spark: SparkSession,
    spark_settings: ThimbleSettings,
    tmp_path: Path,
    table_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The CLI's console takes its width when first imported, whatever COLUMNS an earlier test left: wide
    # enough here that no record is folded across lines.
    monkeypatch.setattr(etl_cli, "out", Console(width=300))
    source = tmp_path / "rows.json"
    rows = [
        {"id": "a", "score": 1.0, "at": "2026-01-01T00:00:00"},
        {"id": "b", "score": -1.0, "at": "2026-01-01T00:00:00"},  # fails the range rule
        {"id": "c", "score": "high", "at": "2026-01-01T00:00:00"},  # not a double
        {"id": "d", "score": "low", "at": "2026-01-01T00:00:00"},  # not a double
        {"id": "e", "score": 1.0, "at": "2026-01-01T00:00:00"},
        {"id": "e", "score": 2.0, "at": "2026-01-01T00:00:00"},  # conflicts with the row above
    ]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = config(
        table=table_name,
        source={"type": "files", "path": str(source), "format": "json"},
        schema_={"columns": {"id": "string", "score": "double", "at": "timestamp"}},
        validate_=[{"rule": "range", "column": "score", "min": 0}],
        journal={"keys": ["id"], "order_by": "at"},
        write={"mode": "journal"},
    )
    run = run_table(cfg, spark=spark, settings=spark_settings)
    assert run.rows_quarantined == 5

    summary = quarantine_summary(table_name, spark=spark, settings=spark_settings)
    assert (summary.rows, summary.runs) == (5, 1)
    assert [(r.rule, r.rows) for r in summary.rules] == [
        (CONFLICT_RULE, 2),
        ("source: value of 'score' is not a double", 2),
        ("range(score)", 1),
    ]

    settings_file = tmp_path / "thimble.yaml"
    settings_file.write_text(
        yaml.safe_dump(
            {"warehouse": spark_settings.warehouse.model_dump(), "spark": {"shuffle_partitions": 2}}
        )
    )
    runner = CliRunner()
    shown = runner.invoke(
        app, ["quarantine", table_name, "--config", str(settings_file)], env={"COLUMNS": "300"}
    )
    assert shown.exit_code == 0, shown.output
    assert (
        f"5 rows quarantined in 1 run(s) ({spark_settings.warehouse.database}.{table_name}_quarantine)"
        in (shown.output)
    )
    assert "source: value of 'score' is not a double" in shown.output
    assert '"score": "high"' in shown.output

    changed = runner.invoke(
        app, ["changes", table_name, "--since", "-1", "--config", str(settings_file)], env={"COLUMNS": "300"}
    )
    assert changed.exit_code == 0, changed.output
    assert "total: 1 rows (1 insert, 0 update_preimage, 0 update_postimage, 0 delete)" in changed.output
