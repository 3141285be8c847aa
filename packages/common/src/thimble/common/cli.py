"""Helpers shared by the packages' command-line interfaces."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

from rich.console import Console
from rich.markup import escape

from thimble.common.errors import ThimbleError

P = ParamSpec("P")
R = TypeVar("R")

stderr = Console(stderr=True)


def user_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Report a :class:`ThimbleError` as a plain message and exit with its code, without a traceback."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except ThimbleError as exc:
            stderr.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            sys.exit(exc.exit_code)

    return wrapper
