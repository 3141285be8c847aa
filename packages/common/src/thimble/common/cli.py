"""Helpers shared by the packages' command-line interfaces."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

from rich.console import Console
from rich.markup import escape

from thimble.common.errors import ThimbleError, spark_failure
from thimble.common.text import escape_controls

P = ParamSpec("P")
R = TypeVar("R")

# A message holds outside text (a value, a name, a path): printed as written, never read as an emoji code.
stderr = Console(stderr=True, emoji=False)


def report_error(message: str) -> None:
    """Print ``error: message`` on stderr, as every Thimble command reports a user error.

    The message's own line breaks stay; every other character a terminal acts on is escaped: a
    message may quote outside text (a value Spark could not cast, a name from a file)."""
    shown = escape(escape_controls(message, keep_newlines=True))
    stderr.print(f"[bold red]error:[/] {shown}", highlight=False, soft_wrap=True)


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
