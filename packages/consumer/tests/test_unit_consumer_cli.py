"""CLI errors that need no broker: app paths, describe."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from thimble.consumer._loader import load_app
from thimble.consumer.cli import app as cli
from thimble.consumer.errors import AppLoadError

from .conftest import CLI_APP

pytestmark = pytest.mark.unit

runner = CliRunner()


@pytest.mark.parametrize(
    ("ref", "needle"),
    [
        ("features", "must look like 'module:attr'"),
        ("no_such_module_xyz:app", "no module named 'no_such_module_xyz'"),
        (CLI_APP.replace(":app", ":nope"), "has no attribute 'nope'; apps it defines: app"),
        (CLI_APP.replace(":app", ":SRC"), "is a str, not a thimble.consumer.App"),
        ("missing/file.py:app", "no such file"),
    ],
)
def test_wrong_app_paths(ref: str, needle: str) -> None:
    with pytest.raises(AppLoadError, match=needle):
        load_app(ref)
    result = runner.invoke(cli, ["run", ref])
    assert result.exit_code == 2
    assert needle in result.output
    assert "Traceback" not in result.output


def test_broken_handler_in_app_module(tmp_path: Path) -> None:
    module = tmp_path / "broken_app.py"
    module.write_text(
        "from thimble.consumer import App\napp = App('x')\n@app.handler(source='a')\ndef f(x): ...\n"
    )
    result = runner.invoke(cli, ["describe", f"{module}:app"])
    assert result.exit_code == 2
    assert "parameter 'x' has no type annotation" in result.output
    assert "broken_app.py:3" in result.output


def test_describe_json() -> None:
    result = runner.invoke(cli, ["describe", CLI_APP, "--json"])
    assert result.exit_code == 0, result.output
    info = orjson.loads(result.stdout)
    [handler] = info["handlers"]
    assert info["app"] == "consumer-cli-test"
    assert handler["name"] == "handle"
    assert handler["input_schema"]["properties"]["id"]["type"] == "integer"
    assert handler["output_schema"]["title"] == "Result"
    assert handler["dead_letter_topics"] == ["src.dlq"]
    assert runner.invoke(cli, ["describe", CLI_APP]).exit_code == 0


def test_invalid_config_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("consumer:\n  max_retries: -1\n")
    result = runner.invoke(cli, ["describe", CLI_APP, "--config", str(config)])
    assert result.exit_code == 2
    assert "max_retries" in result.output


def test_an_empty_group_id_is_refused_not_taken_for_the_default() -> None:
    from thimble.common import ConfigError, load_settings
    from thimble.consumer import ConsumerSettings

    with pytest.raises(ConfigError, match=r"consumer\.group_id"):
        load_settings(ConsumerSettings, overrides={"consumer": {"group_id": ""}})
