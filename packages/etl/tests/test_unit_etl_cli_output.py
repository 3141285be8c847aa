"""The commands against what a user can give them, without Spark (the commands' reads are replaced by
plain results, and a test fails if a session would start).

What they print is the data and the config as written, never rich markup or emoji codes: ``[/]`` in a
quarantined record made ``thimble-etl quarantine`` end in a traceback, and ``quantile:a:0.5`` printed as
``quantile🅰0.5``. An output path they cannot use, or would destroy, and a limit Spark cannot take are one
line before Spark starts.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import thimble.common.spark
from thimble.etl import _prometheus, cli, quarantine, runner
from thimble.etl.config import TableConfig
from thimble.etl.errors import EtlError
from thimble.etl.load import RunResult
from thimble.etl.quality import CheckResult
from thimble.etl.quarantine import QuarantinedRow, QuarantineSummary, RuleCount

pytestmark = pytest.mark.unit

AT = datetime(2026, 12, 1, 8, tzinfo=UTC)
HOSTILE = '{"name": "[/] [bold]x[/bold] :smile: [red]"}'


def _no_spark(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "_settings", lambda config: None)
    monkeypatch.setattr(cli, "_spark", lambda settings: None)
    monkeypatch.setattr(cli.out, "width", 400)  # one line per row, whatever the terminal


def test_quarantine_prints_records_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_spark(monkeypatch)
    summary = QuarantineSummary(
        "clients",
        "clients_quarantine",
        1,
        1,
        [RuleCount("sql([x] = 1)", 1, 1, AT)],
        [QuarantinedRow("[/]run", AT, ["range(a):b:"], HOSTILE)],
    )

    def read(table: str, **kwargs: Any) -> QuarantineSummary:
        return summary

    monkeypatch.setattr(quarantine, "quarantine_summary", read)
    result = CliRunner().invoke(cli.app, ["quarantine", "clients"])
    assert result.exit_code == 0, result.output
    for text in (HOSTILE, "sql([x] = 1)", "[/]run", "range(a):b:"):
        assert text in result.output


def test_quarantine_shows_the_terminal_controls_of_its_records_escaped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A landed value is anyone's text: printed raw, its escapes cleared the screen or reversed the line.
    _no_spark(monkeypatch)
    record = '{"name": "\u202eevil", "note": "\x1b[2Jgone"}'
    summary = QuarantineSummary(
        "clients", "clients_quarantine", 1, 1, [RuleCount("not_null(a)", 1, 1, AT)],
        [QuarantinedRow("run\x1b]0;title\x07", AT, ["not_null(a)"], record)],
    )  # fmt: skip
    monkeypatch.setattr(quarantine, "quarantine_summary", lambda table, **kwargs: summary)
    result = CliRunner().invoke(cli.app, ["quarantine", "clients"])
    assert result.exit_code == 0, result.output
    for control in ("\x1b", "\x07", "\u202e"):
        assert control not in result.output
    for text in ('"\\u202eevil"', '"\\x1b[2Jgone"', "run\\x1b]0;title\\x07"):
        assert text in result.output


def test_run_prints_names_as_written(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _no_spark(monkeypatch)
    file = tmp_path / "[t].yaml"
    file.write_text("table: clients\nsource: {type: files, path: /in/x.json, format: json}\n")
    check = CheckResult("quantile:a:0.5 >= 1", "quantile:a:0.5", "warn", "warn", 0.0, "0 < 1 [/]")

    def run_table(config: TableConfig, **kwargs: Any) -> RunResult:
        return RunResult("clients", kwargs["run_id"], "committed", 1, 0, checks=[check], source="/in/[x]")

    monkeypatch.setattr(runner, "run_table", run_table)
    monkeypatch.setattr(_prometheus, "export_run", lambda result, settings: None)
    app = ["run", str(file), "--run-id", "[/]my-run", "--no-progress"]
    result = CliRunner().invoke(cli.app, app)
    assert result.exit_code == 0, result.output
    for text in ("[/]my-run", "/in/[x]", "warn: quantile:a:0.5 >= 1: 0 < 1 [/]"):
        assert text in result.output
    result = CliRunner().invoke(cli.app, ["check", str(file)])
    assert result.output == f"ok: {file} (clients, append)\n"


@pytest.mark.parametrize("where", ["under_a_file", "a_folder"])
def test_report_to_a_path_it_cannot_write_is_one_line_before_any_spark(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, where: str
) -> None:
    # It computed the whole report, then ended in a NotADirectoryError / IsADirectoryError traceback.
    def no_spark(settings: object) -> None:
        raise AssertionError("a Spark session was built")

    monkeypatch.setattr(cli, "_spark", no_spark)
    monkeypatch.setattr(thimble.common.spark, "build_spark_session", no_spark)
    (tmp_path / "file").write_text("")
    output = tmp_path / "file" / "r.html" if where == "under_a_file" else tmp_path
    result = CliRunner().invoke(cli.app, ["report", "clients", "-o", str(output)])
    assert result.exit_code == 2, result.output
    reason = "a part of its folder is a file" if where == "under_a_file" else "it is a folder"
    assert result.output.replace("\n", "") == f"error: cannot write the report to {output}: {reason}"


def test_changes_output_never_replaces_files_spark_did_not_write(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Spark's overwrite deletes the whole path first: ``--output ~/Documents`` deleted the folder's files.
    def spark_started(settings: object) -> None:
        raise EtlError("spark started")

    monkeypatch.setattr(cli, "_settings", lambda config: None)
    monkeypatch.setattr(cli, "_spark", spark_started)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    (tmp_path / "file.parquet").write_text("keep me too")
    previous = tmp_path / "previous"
    previous.mkdir()
    for name in (
        "part-00000-1a.snappy.parquet",
        ".part-00000-1a.snappy.parquet.crc",
        "_SUCCESS",
        "._SUCCESS.crc",
    ):
        (previous / name).write_text("")

    def changes(output: Path) -> str:
        result = CliRunner().invoke(cli.app, ["changes", "clients", "--since", "0", "--output", str(output)])
        assert result.exit_code == 2, result.output
        return result.output.replace("\n", "")

    assert changes(mine) == (
        f"error: --output {mine}: the folder holds files no Spark write made (notes.txt); writing would "
        "delete them: give a new or empty folder"
    )
    assert changes(tmp_path / "file.parquet").endswith(
        "is a file; writing would delete it: give a new or empty folder"
    )
    assert (mine / "notes.txt").read_text() == "keep me"
    assert changes(previous) == "error: spark started"  # a previous output is replaced
    assert changes(tmp_path / "new") == "error: spark started"


@pytest.mark.parametrize("command", ["changes", "quarantine"])
@pytest.mark.parametrize("limit", ["-1", str(2**31)])
def test_a_limit_spark_cannot_take_is_refused_before_spark(
    monkeypatch: pytest.MonkeyPatch, command: str, limit: str
) -> None:
    monkeypatch.setattr(cli, "_settings", lambda config: None)
    monkeypatch.setattr(cli, "_spark", lambda settings: pytest.fail("a Spark session was built"))
    args = [command, "clients", "--limit", limit, *(["--since", "0"] if command == "changes" else [])]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--limit'" in result.output
