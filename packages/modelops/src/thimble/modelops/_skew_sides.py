"""The two sides of the skew check: the feature set's hashes in Redis and its journal's current rows."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import orjson

from thimble.common.features import EVENT_TIME_FIELD, online_key
from thimble.modelops._skew_values import event_ms
from thimble.modelops.errors import ModelOpsError

if TYPE_CHECKING:
    import redis
    from pyspark.sql import SparkSession

    from thimble.modelops.skew import SkewTarget


def glob_escape(text: str) -> str:
    """``text`` matched literally by a Redis glob pattern."""
    return "".join(f"\\{c}" if c in "*?[]\\^-" else c for c in text)


class OnlineSide:
    """The feature set's hashes in Redis."""

    def __init__(self, client: redis.Redis, prefix: str, target: SkewTarget) -> None:
        self.client = client
        self.key_start = online_key(prefix, target.name, "")
        self.target = target

    def sample(self, n: int, scan_limit: int) -> list[str]:
        """Up to ``n`` entities found by SCAN (the keyspace's own order); at most ``scan_limit`` keys seen."""
        found: list[str] = []
        pattern = glob_escape(self.key_start) + "*"
        for seen, key in enumerate(self.client.scan_iter(match=pattern, count=1000), start=1):
            text = key.decode(errors="replace") if isinstance(key, bytes) else str(key)
            found.append(text[len(self.key_start) :])
            if len(found) >= n or seen >= scan_limit:
                break
        return found

    def read(self, entities: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Each entity's fields, JSON-decoded (``_event_time`` as int); absent entities are left out."""
        wanted = list(entities)
        pipe = self.client.pipeline(transaction=False)
        for entity in wanted:
            pipe.hgetall(self.key_start + entity)
        out: dict[str, dict[str, Any]] = {}
        for entity, stored in zip(wanted, pipe.execute(), strict=True):
            if stored:
                out[entity] = {_text(k): _decode(_text(k), v) for k, v in stored.items()}
        return out


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _decode(name: str, raw: bytes | str) -> Any:
    if name == EVENT_TIME_FIELD:
        try:
            return int(raw)
        except ValueError:
            return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _text(raw)


class WarehouseSide:
    """The journal's current rows, read through the DataFrame API (no SQL text is built from names)."""

    def __init__(self, spark: SparkSession, target: SkewTarget) -> None:
        from pyspark.sql import functions as F

        self.target = target
        if not spark.catalog.tableExists(target.table):
            raise ModelOpsError(
                f"no table '{target.table}' in the warehouse (the journal of feature set '{target.name}')"
            )
        table = spark.table(".".join(f"`{p}`" for p in target.table.split(".")))
        missing = [c for c in ("is_current", target.entity_key, target.event_time) if c not in table.columns]
        if missing:
            raise ModelOpsError(
                f"table '{target.table}' has no column {', '.join(repr(c) for c in missing)}: "
                "is it the feature set's journal?"
            )
        self.columns = table.columns
        self.current = table.filter(F.col("is_current"))
        self.key = F.col(_quote(target.entity_key)).cast("string")

    def sample(self, n: int, seed: int) -> dict[str, dict[str, Any]]:
        from pyspark.sql import functions as F

        rows = self.current.orderBy(F.rand(seed)).limit(n).collect()
        return self._by_entity(rows)

    def read(self, entities: list[str]) -> dict[str, dict[str, Any]]:
        if not entities:
            return {}
        return self._by_entity(self.current.filter(self.key.isin(entities)).collect())

    def watermark_ms(self) -> int | None:
        from pyspark.sql import functions as F

        row = self.current.agg(F.max(F.col(_quote(self.target.event_time)))).first()
        return event_ms(row[0]) if row is not None else None

    def _by_entity(self, rows: list[Any]) -> dict[str, dict[str, Any]]:
        return {str(r[self.target.entity_key]): r.asDict(recursive=True) for r in rows}


def _quote(column: str) -> str:
    return "`" + column.replace("`", "``") + "`"
