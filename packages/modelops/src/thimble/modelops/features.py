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
    """Fills declared features into request rows.

    Requests arriving in the same event-loop turn share one pipelined round trip; round trips run
    concurrently, and each gives up after ``timeout_s`` (a hung store is a 503, not a hung request).
    """

    def __init__(
        self,
        spec: FeatureSpec,
        store: OnlineStoreConfig,
        client: aioredis.Redis | None = None,
        timeout_s: float = 0.2,
    ) -> None:
        self.spec = spec
        self.prefix = store.key_prefix
        self.timeout_s = timeout_s
        self.client = client or aioredis.Redis.from_url(
            store.url,
            password=store.password.get_secret_value() if store.password else None,
            socket_connect_timeout=max(timeout_s, 1.0),
        )
        self._fields = list(spec.fields)
        self._waiting: list[tuple[list[Any], asyncio.Future[Values]]] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(self.timeout_s):
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
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Values] = loop.create_future()
        self._waiting.append((entities, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._start_fetch)
        return await future

    def _start_fetch(self) -> None:
        self._scheduled = False
        batch, self._waiting = self._waiting, []
        task = asyncio.get_running_loop().create_task(self._fetch(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fetch(self, batch: list[tuple[list[Any], asyncio.Future[Values]]]) -> None:
        keys = [
            feature_key(self.prefix, self.spec.feature_set, entity)
            for entities, _ in batch
            for entity in entities
        ]
        try:
            async with asyncio.timeout(self.timeout_s):
                values = await self._hmget(keys)
        except Exception as exc:
            reason = (
                f"no answer within {self.timeout_s * 1000:g} ms"
                if isinstance(exc, TimeoutError)
                else f"{type(exc).__name__}: {exc}"
            )
            for _, future in batch:
                if not future.done():
                    future.set_exception(
                        FeatureLookupError(
                            f"online store unavailable for feature set {self.spec.feature_set!r}: {reason}"
                        )
                    )
            return
        start = 0
        for entities, future in batch:
            if not future.done():
                future.set_result(values[start : start + len(entities)])
            start += len(entities)

    async def _hmget(self, keys: list[str]) -> Values:
        if len(keys) == 1:  # a pipeline costs twice a plain command's client time
            return [await self.client.hmget(keys[0], self._fields)]  # type: ignore[list-item]
        async with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(key, self._fields)
            values: Values = await pipe.execute()
        return values
