"""The object a ``module:attribute`` path names (the attribute may be dotted: ``module:Class.method``)."""

from __future__ import annotations

import importlib
from typing import Any


def import_object(path: str) -> Any:
    """Import the module before ``:`` and follow the attributes after it.

    Raises ``ImportError`` (or whatever importing the module raises) and ``AttributeError``, for the caller
    to name in its own message.
    """
    module_name, _, qualname = path.partition(":")
    found: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found
