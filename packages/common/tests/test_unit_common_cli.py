"""A user error is printed as written: no markup or emoji code read from its text, no control acted on."""

from __future__ import annotations

import pytest

from thimble.common.cli import user_errors
from thimble.common.errors import ConfigError, ThimbleError

pytestmark = pytest.mark.unit


def test_a_user_error_is_printed_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    @user_errors
    def command() -> None:
        raise ConfigError(["quality.metrics[0]: 'quantile:a:0.5' [/] [bold]x[/bold] is not a metric"])

    with pytest.raises(SystemExit) as exit_:
        command()
    assert exit_.value.code == ConfigError.exit_code
    err = capsys.readouterr().err
    assert "'quantile:a:0.5' [/] [bold]x[/bold] is not a metric" in err


def test_a_user_error_quoting_terminal_controls_shows_them_escaped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    @user_errors
    def command() -> None:
        raise ThimbleError("cannot cast '\x1b[2J\x1b[31mok\rforged\u202eevil' to bigint")

    with pytest.raises(SystemExit):
        command()
    err = capsys.readouterr().err
    assert err == "error: cannot cast '\\x1b[2J\\x1b[31mok\\rforged\\u202eevil' to bigint\n"


def test_a_configuration_error_keeps_a_line_per_problem(capsys: pytest.CaptureFixture[str]) -> None:
    @user_errors
    def command() -> None:
        raise ConfigError(["a: is required", "b: is not a number"], source="etl.yaml")

    with pytest.raises(SystemExit):
        command()
    assert capsys.readouterr().err.splitlines() == [
        "error: Invalid configuration in etl.yaml:",
        "  a: is required",
        "  b: is not a number",
    ]
