"""Regular expressions are checked with the engine Spark runs them with (Java), at ``check`` time."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from thimble.etl.cli import app

pytestmark = pytest.mark.unit


def _table(tmp_path: Path, rule_pattern: str, cleanse_pattern: str = "[^0-9]") -> Path:
    file = tmp_path / "clients.yaml"
    config = {
        "table": "clients",
        "source": {"type": "files", "path": "/data/clients.json", "format": "json"},
        "schema": {"columns": {"client_id": "string", "phone": "string"}},
        "cleanse": [
            {"step": "regex_replace", "column": "phone", "pattern": cleanse_pattern, "replacement": ""}
        ],
        "validate": [{"rule": "regex", "column": "client_id", "pattern": rule_pattern}],
        "write": {"mode": "append"},
    }
    file.write_text(yaml.safe_dump(config))
    return file


@pytest.mark.parametrize(
    ("rule", "cleanse"),
    [
        (r"^\p{Lower}+\d*$", "[^0-9]"),  # POSIX class: Java only
        (r"^(?<prefix>[a-z])\k<prefix>$", r"[\p{Punct}&&[^-]]"),  # Java named group, class intersection
        (r"^\p{IsAlphabetic}+$", r"\h+"),  # Unicode property, horizontal space
    ],
)
def test_java_patterns_pass_check(tmp_path: Path, rule: str, cleanse: str) -> None:
    result = CliRunner().invoke(app, ["check", str(_table(tmp_path, rule, cleanse))])

    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("pattern", "hint"),
    [
        (r"^(?P<prefix>[a-z])", "Java names a group (?<name>...), not (?P<name>...)"),
        (r"^(?P<p>[a-z])(?P=p)$", "Java refers back to a named group with \\k<name>"),
        (r"^[a-z", "Unclosed character class"),
    ],
)
def test_python_only_patterns_fail_check_naming_file_and_field(
    tmp_path: Path, pattern: str, hint: str
) -> None:
    file = _table(tmp_path, pattern)

    result = CliRunner().invoke(app, ["check", str(file)])

    assert result.exit_code == 2
    assert f"Invalid configuration in {file}:" in result.output
    line = next(x for x in result.output.splitlines() if "validate[0].pattern:" in x)
    assert "not a valid regular expression for Spark (Java syntax)" in line
    assert hint in result.output
    assert "Traceback" not in result.output
