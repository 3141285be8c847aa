"""Online feature enrichment from the store thimble-consumer writes.

Contract: a Redis HASH at ``{key_prefix}:{feature_set}:{entity_key}`` (``features:client-features:42``) of
field -> JSON-encoded value, plus ``_event_time`` (epoch ms), which is not a feature. A request may carry
only the entity key; values it does carry win over the store's.
"""

from __future__ import annotations

import asyncio
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


Values = list[list[bytes | None]]


class OnlineFeatures:
    """Fills declared features into request rows; concurrent requests share one pipelined round trip."""

    def __init__(
        self, spec: FeatureSpec, store: OnlineStoreConfig, client: aioredis.Redis | None = None
    ) -> None:
        self.spec = spec
        self.prefix = store.key_prefix
        self.client = client or aioredis.Redis.from_url(
            store.url, password=store.password.get_secret_value() if store.password else None
        )
        self._fields = list(spec.fields)
        self._waiting: list[tuple[list[Any], asyncio.Future[Values]]] = []
        self._in_flight = False

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
        values = await self._lookup([r[key] for _, r in keyed]) if keyed else []
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

    async def _lookup(self, entities: list[Any]) -> Values:
        """The feature values of ``entities``, fetched together with other requests waiting at the same time."""
        future: asyncio.Future[Values] = asyncio.get_running_loop().create_future()
        self._waiting.append((entities, future))
        if not self._in_flight:
            self._in_flight = True
            asyncio.get_running_loop().create_task(self._fetch_waiting())
        return await future

    async def _fetch_waiting(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                keys = [
                    feature_key(self.prefix, self.spec.feature_set, entity)
                    for entities, _ in batch
                    for entity in entities
                ]
                try:
                    values = await self._hmget(keys)
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(
                                FeatureLookupError(
                                    f"online store unavailable for feature set {self.spec.feature_set!r}: {exc}"
                                )
                            )
                    continue
                start = 0
                for entities, future in batch:
                    if not future.done():
                        future.set_result(values[start : start + len(entities)])
                    start += len(entities)
        finally:
            self._in_flight = False

    async def _hmget(self, keys: list[str]) -> Values:
        if len(keys) == 1:  # a pipeline costs twice a plain command's client time
            return [await self.client.hmget(keys[0], self._fields)]  # type: ignore[list-item]
        async with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(key, self._fields)
            values: Values = await pipe.execute()
        return values
