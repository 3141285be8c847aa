"""The object a ``module:attribute`` path names (the attribute may be dotted: ``module:Class.method``)."""

from __future__ import annotations

import importlib
from typing import Any


def import_object(path: str) -> Any:
    """Import the module before ``:`` and follow the attributes after it.

    Raises ``ImportError`` and ``AttributeError``, for the caller to name in its own message. A module that
    raises anything else while it is imported is an ``ImportError`` too, with that exception's one-line
    summary (``importing 'churn' raised RuntimeError: no such table``), as ``thimble-consumer run`` says it.
    """
    module_name, _, qualname = path.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError:
        raise
    except Exception as exc:
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
        raise ImportError(
            f"importing {module_name!r} raised {type(exc).__name__}" + (f": {first}" if first else "")
        ) from exc
    for part in qualname.split("."):
        found = getattr(found, part)
    return found
