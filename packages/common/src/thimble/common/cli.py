"""Helpers shared by the packages' command-line interfaces."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, ParamSpec, TypeVar

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from thimble.common.errors import ThimbleError, spark_failure
from thimble.common.text import escape_controls

P = ParamSpec("P")
R = TypeVar("R")


class TerminalConsole(Console):
    """The console of every Thimble command: it shows control characters (``\x1b``, ``\r``, bidi
    overrides) as escapes rather than sending them to the terminal, line breaks apart. What a command
    prints may come from outside (a landed value, a dead letter, a registry entry): every string printed,
    table cells included, is rendered through here (a :class:`~rich.text.Text` built by hand is not: print
    outside text beside it as a string)."""

    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str(escape_controls(text, keep_newlines=True), **kwargs)


# A message holds outside text (a value, a name, a path): printed as written, never read as an emoji code.
stderr = TerminalConsole(stderr=True, emoji=False)


def report_error(message: str) -> None:
    """Print ``error: message`` on stderr, as every Thimble command reports a user error."""
    stderr.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def user_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Report a :class:`ThimbleError` or a Spark failure as a plain message and exit, without a traceback."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except ThimbleError as exc:
            report_error(str(exc))
            sys.exit(exc.exit_code)
        except Exception as exc:
            failure = spark_failure(exc)
            if failure is None:
                raise
            report_error(f"Spark failed: {failure.reason}")
            sys.exit(ThimbleError.exit_code)

    return wrapper
