"""``${VAR}`` / ``${VAR:-default}`` in table config values, filled from the environment when a file loads."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from thimble.common.validation import format_location

_REFERENCE = re.compile(r"\$(\$)|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{([^}]*)\}?")


def substitute(data: Any, environ: Mapping[str, str]) -> tuple[Any, list[str]]:
    """``data`` with every reference in its string values replaced; and one problem per unusable reference.

    ``$$`` is a literal ``$``. Keys are left as written; only string values are substituted, so a
    variable's value is never parsed as YAML.
    """
    problems: list[str] = []
    return _walk(data, (), environ, problems), problems


def _walk(node: Any, path: tuple[int | str, ...], environ: Mapping[str, str], problems: list[str]) -> Any:
    if isinstance(node, dict):
        return {k: _walk(v, (*path, k), environ, problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_walk(v, (*path, i), environ, problems) for i, v in enumerate(node)]
    if isinstance(node, str) and "$" in node:
        return _fill(node, path, environ, problems)
    return node


def _fill(text: str, path: tuple[int | str, ...], environ: Mapping[str, str], problems: list[str]) -> str:
    where = format_location(list(path))

    def replace(match: re.Match[str]) -> str:
        escaped, name, default, malformed = match.groups()
        if escaped:
            return "$"
        if name is None:
            problems.append(
                f"{where}: '${{{malformed}' is not a variable reference; write ${{NAME}} or "
                "${NAME:-default} (NAME: letters, digits, '_'), or $$ for a literal '$'"
            )
            return match.group(0)
        value = environ.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                problems.append(
                    f"{where}: environment variable {name} is not set (set it, or give a default: "
                    f"${{{name}:-value}})"
                )
                return match.group(0)
            return default
        return value

    return _REFERENCE.sub(replace, text)
