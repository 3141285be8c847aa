"""Comparing a value as the online store holds it (JSON) with the value the warehouse holds (Spark)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

import orjson


def plain(value: Any) -> Any:
    """``value`` as JSON can hold it: dates as ISO text, NaN as ``None``."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def epoch_ms(value: Any) -> int | None:
    """A datetime, date or ISO text as epoch milliseconds (naive as UTC); ``None`` for anything else."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return int(aware.timestamp() * 1000)
    if isinstance(value, date):
        return int(datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp() * 1000)
    return None


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def same_value(online: Any, warehouse: Any, tolerance: float = 1e-9) -> bool:
    """Whether an online value (JSON-decoded) and a warehouse value (as Spark collects it) agree.

    ``None`` and NaN are equal; numbers agree within ``tolerance`` (relative, and absolute near zero);
    a timestamp agrees with an ISO text or epoch milliseconds of the same millisecond; a nested value
    agrees with its JSON text; a bool only with a bool.
    """
    if _is_null(online) or _is_null(warehouse):
        return _is_null(online) and _is_null(warehouse)
    if isinstance(online, bool) or isinstance(warehouse, bool):
        return isinstance(online, bool) and isinstance(warehouse, bool) and online == warehouse
    if isinstance(warehouse, datetime | date) or isinstance(online, datetime | date):
        left = online if isinstance(online, int | float) else epoch_ms(online)
        right = warehouse if isinstance(warehouse, int | float) else epoch_ms(warehouse)
        return left is not None and right is not None and int(left) == int(right)
    if isinstance(online, int | float) and isinstance(warehouse, int | float):
        return math.isclose(online, warehouse, rel_tol=tolerance, abs_tol=tolerance)
    if isinstance(warehouse, str) and isinstance(online, dict | list):
        try:
            return bool(online == orjson.loads(warehouse))
        except orjson.JSONDecodeError:
            return False
    if isinstance(online, list) and isinstance(warehouse, list | tuple):
        return len(online) == len(warehouse) and all(
            same_value(a, b, tolerance) for a, b in zip(online, warehouse, strict=True)
        )
    if isinstance(online, dict) and isinstance(warehouse, Mapping):
        return online.keys() == warehouse.keys() and all(
            same_value(online[k], warehouse[k], tolerance) for k in online
        )
    return bool(online == warehouse)


def event_ms(value: Any) -> int | None:
    """A warehouse event time (timestamp, collected naive in local time, or epoch ms) as epoch ms."""
    if value is None:
        return None
    if isinstance(value, datetime):
        from thimble.common.spark import as_utc

        return int(as_utc(value).timestamp() * 1000)
    if isinstance(value, int | float):
        return int(value)
    return epoch_ms(value)


def local_times(row: dict[str, Any]) -> dict[str, Any]:
    """Collected timestamps (naive, local time) as aware UTC datetimes."""
    from thimble.common.spark import as_utc

    return {k: as_utc(v) if isinstance(v, datetime) and v.tzinfo is None else v for k, v in row.items()}
