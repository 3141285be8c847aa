"""A table config from a :class:`~thimble.common.features.FeatureSet`: its landing dataset, columns and journal.

In Python, ``feature_set_config(client_features)`` is the table config's mapping; in YAML,
``feature_set: package.module:attribute`` fills what the file leaves out.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from thimble.common.features import FeatureSet
from thimble.etl._sql import quote

IMPORT_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")


def feature_set_config(feature_set: FeatureSet) -> dict[str, Any]:
    """The table config of a feature set's journal: its landed dataset, its columns, versions by entity
    ordered by event time. Add cleanse, validate and quality sections to it as to any table config."""
    config: dict[str, Any] = {
        "table": feature_set.table,
        "source": {"type": "landing", "dataset": feature_set.dataset},
        "schema": {"columns": feature_set.columns()},
        "journal": feature_set.journal(),
        "write": {"mode": "journal"},
    }
    if steps := _event_time_steps(feature_set):
        config["cleanse"] = steps
    return config


def _event_time_steps(feature_set: FeatureSet) -> list[dict[str, Any]]:
    """An event time in epoch milliseconds becomes a timestamp before anything else: the journal orders
    versions by it, and a number cast to a timestamp would be read as seconds."""
    column = feature_set.event_time
    if feature_set.columns()[column] != "bigint":
        return []
    return [{"step": "sql", "column": column, "expression": f"timestamp_millis({quote(column)})"}]


def import_feature_set(path: str) -> FeatureSet:
    """The FeatureSet at ``module:attribute``; ``ValueError`` saying why not (one line)."""
    if not isinstance(path, str) or not IMPORT_PATH.fullmatch(path):
        raise ValueError(f"{path!r} is not an import path: expected 'package.module:attribute'")
    module_name, _, attribute = path.partition(":")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ValueError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    found = getattr(module, attribute, None)
    if not isinstance(found, FeatureSet):
        what = f"no attribute {attribute!r}" if found is None else f"a {type(found).__name__} there"
        raise ValueError(f"{path} is no thimble.common.features.FeatureSet (found {what})")
    return found


def with_feature_set(data: Mapping[str, Any], feature_set: FeatureSet) -> dict[str, Any]:
    """``data`` with the sections the feature set defines, where ``data`` does not give them."""
    out = dict(data)
    defined = feature_set_config(feature_set)
    for key in ("table", "source"):
        out.setdefault(key, defined[key])
    schema = out.get("schema")
    if schema is None:
        out["schema"] = defined["schema"]
    elif isinstance(schema, Mapping) and "columns" not in schema:
        out["schema"] = {**schema, **defined["schema"]}
    journal = out.get("journal")
    if journal is None:
        out["journal"] = defined["journal"]
    elif isinstance(journal, Mapping):
        out["journal"] = {**defined["journal"], **journal}
    if steps := _event_time_steps(feature_set):
        out["cleanse"] = [*steps, *(out.get("cleanse") or [])]
    write = out.get("write")
    if write is None:
        out["write"] = defined["write"]
    elif isinstance(write, Mapping) and "mode" not in write:
        out["write"] = {**write, **defined["write"]}
    return out
