"""The grammar of model names, aliases and versions: the only strings that become registry paths.

Every name from outside (a command line, a request, a file in the registry) is checked here before it is
joined into a path. The grammar is ASCII only and has no separator or dot, so a valid name can never
leave its folder; the registry also checks each path it builds against its root. Text from outside is
shown in a message or an error's location only through :func:`shown` or :func:`shown_error`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from thimble.common.text import cut
from thimble.common.validation import SHOWN_MESSAGE, shown_location
from thimble.modelops.errors import InvalidNameError

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails

LATEST = "latest"
MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,99}", re.ASCII)
ALIAS_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}", re.ASCII)
VERSION = re.compile(r"v?([1-9][0-9]{0,8})", re.ASCII)
_SHOWN = 60
ERROR_TEXT = 4000
"""At most this many characters of an error a user's code raised (a model's) go into a message or a log."""


def shown(value: object) -> str:
    """``value`` for a one-line message: text quoted with control characters escaped, long text cut
    (any other value as its ``repr``, cut the same way)."""
    if isinstance(value, str):
        return repr(value if len(value) <= _SHOWN else value[:_SHOWN] + "…")
    text = repr(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "…"


def shown_error(error: ErrorDetails) -> tuple[list[int | str], str]:
    """A pydantic error's location and message, cut and escaped for an answer or a message: the keys of
    a row come from outside (an extra field, a dict's key), and a message may quote its input."""
    return shown_location(error["loc"]), cut(error["msg"], SHOWN_MESSAGE)


def error_text(exc: BaseException, limit: int = ERROR_TEXT) -> str:
    """``str(exc)`` of an error raised by a user's code, for a message or a log line: cut and escaped by
    :func:`thimble.common.text.cut` with the cut said (``… (12000 more characters)``), and never failing
    itself (an error whose ``__str__`` raises is named by its type)."""
    try:
        text = str(exc)
    except Exception as inner:
        return f"(its text cannot be shown: str() raised {type(inner).__name__})"
    return cut(text, limit, count=True)


def check_model_name(name: str, what: str = "model name") -> str:
    """``name`` when it is a model name (lowercase letters, digits, '-', '_'); else :class:`InvalidNameError`."""
    if not isinstance(name, str) or not MODEL_NAME.fullmatch(name):
        raise InvalidNameError(
            f"{what} {shown(str(name))}: use lowercase letters, digits, '-' and '_' (at most 100, "
            "starting with a letter or digit)"
        )
    return name


def check_alias(alias: str) -> str:
    """``alias`` when it is an alias name (a lowercase word, not 'latest' nor a number)."""
    if (
        not isinstance(alias, str)
        or not ALIAS_NAME.fullmatch(alias)
        or alias == LATEST
        or re.fullmatch(r"v[0-9]+", alias)
    ):
        raise InvalidNameError(
            f"alias {shown(str(alias))}: use a lowercase word such as prod or staging "
            "(letters, digits, '-' and '_', starting with a letter; not 'latest' or a number)"
        )
    return alias


def version_number(text: str) -> int | None:
    """The version a selector names (``3`` or ``v3``), else ``None``."""
    match = VERSION.fullmatch(text)
    return int(match.group(1)) if match else None


def check_version(version: int | str) -> int:
    """A version number (1 or more) from an int or ``"3"``/``"v3"``; else :class:`InvalidNameError`."""
    if isinstance(version, int) and not isinstance(version, bool):
        number: int | None = version if 1 <= version < 10**9 else None
    else:
        number = version_number(version) if isinstance(version, str) else None
    if number is None:
        raise InvalidNameError(f"version {shown(str(version))}: use a version number such as 3")
    return number


def check_selector(selector: str) -> str:
    """What follows ``@`` in a reference: ``latest``, a version or an alias."""
    if selector == LATEST or version_number(selector) is not None:
        return selector
    if not isinstance(selector, str) or not ALIAS_NAME.fullmatch(selector):
        raise InvalidNameError(
            f"{shown(str(selector))} after '@': give a version number (3) or an alias (a lowercase word)"
        )
    return selector
