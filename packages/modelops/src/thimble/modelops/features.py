"""Online feature enrichment from the store thimble-consumer writes.

Contract: a Redis HASH at ``{key_prefix}:{feature_set}:{entity_key}`` (``features:client-features:42``) of
field -> JSON-encoded value, plus ``_event_time`` (epoch ms), which is not a feature. A request may carry
only the entity key; values it does carry win over the store's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis

from thimble.common.config import OnlineStoreConfig
from thimble.modelops.envelope import FeatureSpec
from thimble.modelops.errors import FeatureLookupError

EVENT_TIME = "_event_time"
_MISSING = object()


def feature_key(prefix: str, feature_set: str, entity: Any) -> str:
    """The Redis key of one entity's features."""
    return f"{prefix}:{feature_set}:{entity}"


class OnlineFeatures:
    """Fills declared features into request rows with one pipelined round trip per request."""

    def __init__(
        self, spec: FeatureSpec, store: OnlineStoreConfig, client: aioredis.Redis | None = None
    ) -> None:
        self.spec = spec
        self.prefix = store.key_prefix
        self.client = client or aioredis.Redis.from_url(
            store.url, password=store.password.get_secret_value() if store.password else None
        )
        self._fields = list(spec.fields)
        self._names = [f.encode() for f in self._fields]

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except Exception:
            return False

    async def close(self) -> None:
        await self.client.aclose()

    async def fill(self, records: Sequence[dict[str, Any]]) -> dict[str, int]:
        """Fill missing feature fields in place; return how many values came from defaults, per field.

        Raises :class:`FeatureLookupError` (naming rows and fields) when the store has no value and the
        input model no default; rows without an entity key are left for validation to report.
        """
        todo = [
            (i, r)
            for i, r in enumerate(records)
            if isinstance(r, dict) and any(f not in r for f in self._fields)
        ]
        if not todo:
            return {}
        key = self.spec.entity_key
        keyed = [(i, r) for i, r in todo if r.get(key) is not None]
        values: list[list[bytes | None]] = []
        if keyed:
            try:
                async with self.client.pipeline(transaction=False) as pipe:
                    for _, r in keyed:
                        pipe.hmget(feature_key(self.prefix, self.spec.feature_set, r[key]), self._fields)
                    values = await pipe.execute()
            except Exception as exc:
                raise FeatureLookupError(
                    f"online store unavailable for feature set {self.spec.feature_set!r}: {exc}"
                ) from exc
        defaulted: dict[str, int] = {}
        missing: dict[int, list[str]] = {}
        defaults = self.spec.defaults
        for (i, record), row_values in zip(keyed, values, strict=True):
            for field, raw in zip(self._fields, row_values, strict=True):
                if field in record:
                    continue
                if raw is not None:
                    try:
                        record[field] = orjson.loads(raw)
                    except orjson.JSONDecodeError:
                        record[field] = raw.decode(errors="replace")
                elif field in defaults:
                    record[field] = defaults[field]
                    defaulted[field] = defaulted.get(field, 0) + 1
                else:
                    missing.setdefault(i, []).append(field)
        if missing:
            first = next(iter(missing))
            detail = ", ".join(missing[first])
            entity = records[first][key]
            raise FeatureLookupError(
                f"features {detail} of {feature_key(self.prefix, self.spec.feature_set, entity)} are not in the online "
                "store and have no default; send them in the request or declare a default",
                missing,
            )
        return defaulted
