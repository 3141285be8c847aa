"""A user error is printed as written: one line, no markup or emoji code read from its text."""

from __future__ import annotations

import pytest

from thimble.common.cli import user_errors
from thimble.common.errors import ConfigError

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
