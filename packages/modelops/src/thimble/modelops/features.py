"""Online feature enrichment from the store thimble-consumer writes.

Contract (the layout is :mod:`thimble.common.features`): a Redis HASH at
``{key_prefix}:{feature_set}:{entity_key}`` (``features:client-features:42``) of field -> JSON-encoded
value, plus ``_event_time`` (epoch ms), which is not a feature and never read here. A request may carry
only the entity key; values it does carry win over the store's. The key is made of the entity as the
input field validates it, as the consumer writes it: ``42.0`` reads client 42, an upper-case UUID its
canonical form; a value the field refuses reads nothing and is left for validation to report.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis
from pydantic import TypeAdapter, ValidationError
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from thimble.common.config import OnlineStoreConfig
from thimble.common.features import online_key
from thimble.modelops.envelope import FeatureSpec, json_integers
from thimble.modelops.errors import FeatureLookupError

Values = list[list[bytes | None]]


def store_client(store: OnlineStoreConfig, timeout_s: float, **options: Any) -> aioredis.Redis:
    """The client :class:`OnlineFeatures` reads with: a pooled connection the store dropped (a restart,
    an idle timeout) is made again and the command retried, once. It runs no command but the reads, so a
    user allowed only ``HMGET`` and ``PING`` is enough. Every read runs under the lookup's own deadline,
    so the client sets no socket timeout of its own, which would start a task for each command."""
    return aioredis.Redis.from_url(
        store.url,
        password=store.password.get_secret_value() if store.password else None,
        socket_connect_timeout=max(timeout_s, 1.0),
        retry=Retry(NoBackoff(), 1),
        **({"socket_timeout": None} | options),
    )


class OnlineFeatures:
    """Fills declared features into request rows.

    Requests arriving in the same event-loop turn share one pipelined round trip (a key asked for twice
    is read once); round trips run concurrently, and each gives up after ``timeout_s`` (a hung store is
    a 503, not a hung request).
    """

    def __init__(
        self,
        spec: FeatureSpec,
        store: OnlineStoreConfig,
        client: aioredis.Redis | None = None,
        timeout_s: float = 0.2,
        entity_type: Any = str | int,
    ) -> None:
        """``entity_type``: the input model's annotation of the entity key field."""
        self.spec = spec
        self.prefix = store.key_prefix
        self.timeout_s = timeout_s
        self.client = client or store_client(store, timeout_s)
        self._fields = list(spec.fields)
        self._entity_adapter: TypeAdapter[Any] = TypeAdapter(entity_type)
        self._entity_as_is: set[Any] = (
            {str, int} if entity_type == str | int else {entity_type} if entity_type in (str, int) else set()
        )
        self._hmget_head = b"*%d\r\n$5\r\nHMGET\r\n" % (len(self._fields) + 2)
        self._hmget_fields = b"".join(_bulk_string(f.encode()) for f in self._fields)
        self._waiting: list[tuple[list[Any], asyncio.Future[Values]]] | None = None
        self._round_trips: set[asyncio.Task[None]] = set()
        self._reading = 0  # round trips under way

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
        entities: dict[int, Any] = {}
        keyed = []
        for i, r in todo:
            entity = self._entity(r.get(key))
            if entity is not None:
                entities[i] = entity
                keyed.append((i, r))
        values = await self._lookup(list(entities.values())) if keyed else []
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
            raise FeatureLookupError(
                f"features {detail} of {online_key(self.prefix, self.spec.feature_set, entities[first])} are not in the online "
                "store and have no default; send them in the request or declare a default",
                missing,
            )
        return defaulted

    def _entity(self, value: Any) -> Any:
        """The entity ``value`` names, as its input field validates it (strictly, as a request is);
        None for no value or one the field refuses."""
        if value is None or type(value) in self._entity_as_is:
            return value
        try:
            return self._entity_adapter.validate_json(orjson.dumps(json_integers(value)), strict=True)
        except (ValidationError, orjson.JSONEncodeError):
            return None

    async def _lookup(self, entities: list[Any]) -> Values:
        """The feature values of ``entities``, fetched together with other requests waiting at the same time.

        With no round trip under way, a request reads at once (one connection never waits). Otherwise
        the first request of an event-loop turn leads: it yields once so that the turn's other requests
        join it. Still alone, it reads for itself. Joined, the round trip runs as a task of its own, so
        a request cancelled meanwhile (its client went away) never takes the others' answers with it.
        """
        loop = asyncio.get_running_loop()
        if self._waiting is not None:
            future: asyncio.Future[Values] = loop.create_future()
            self._waiting.append((entities, future))
            return await future
        if not self._reading:
            return await self._read(entities)
        self._waiting = []
        try:
            await asyncio.sleep(0)
        except BaseException:
            self._start_round_trip()  # for those who joined
            raise
        if not self._waiting:
            self._waiting = None
            return await self._read(entities)
        own: asyncio.Future[Values] = loop.create_future()
        self._waiting.insert(0, (entities, own))
        self._start_round_trip()
        return await own

    def _start_round_trip(self) -> None:
        batch, self._waiting = self._waiting or [], None
        if not batch:
            return
        task = asyncio.get_running_loop().create_task(self._round_trip(batch))
        self._round_trips.add(task)
        task.add_done_callback(self._round_trips.discard)

    async def _round_trip(self, batch: list[tuple[list[Any], asyncio.Future[Values]]]) -> None:
        """One pipelined read for every request of ``batch``; each request's future gets its values."""
        try:
            values = await self._read([e for entities, _ in batch for e in entities])
        except FeatureLookupError as exc:
            _fail(batch, exc)
            return
        except BaseException:  # the server is stopping
            _fail(
                batch, FeatureLookupError(f"the read of feature set {self.spec.feature_set!r} was cancelled")
            )
            raise
        start = 0
        for entities, future in batch:
            if not future.done():
                future.set_result(values[start : start + len(entities)])
            start += len(entities)

    async def _read(self, entities: list[Any]) -> Values:
        """One round trip for ``entities``, within ``timeout_s``; a :class:`FeatureLookupError` when it fails."""
        keys = [online_key(self.prefix, self.spec.feature_set, e) for e in entities]
        self._reading += 1
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._hmget(keys)
        except Exception as exc:
            reason = (
                f"no answer within {self.timeout_s * 1000:g} ms"
                if isinstance(exc, TimeoutError)
                else f"{type(exc).__name__}: {exc}"
            )
            raise FeatureLookupError(
                f"online store unavailable for feature set {self.spec.feature_set!r}: {reason}"
            ) from None
        finally:
            self._reading -= 1

    async def _hmget(self, keys: list[str]) -> Values:
        """One ``HMGET`` per distinct key, written together on one pooled connection.

        A pooled connection rather than a client call or a pipeline, whose layers cost about a third of
        the read's time; the commands are encoded here, the fields once for all (the client's encoder
        costs more than the rest of the read's own work). A connection interrupted anywhere (timeout,
        cancellation, an error reply) is dropped, so no late answer can reach another read; a broken one
        (the store restarted) is reconnected and the read retried once.
        """
        distinct = list(dict.fromkeys(keys))
        commands = [self._hmget_head + _bulk_string(key.encode()) + self._hmget_fields for key in distinct]
        pool = self.client.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]

        async def round_trip(commands: list[bytes]) -> Values:
            await connection.send_packed_command(commands, check_health=False)
            return [await connection.read_response() for _ in distinct]

        try:
            values: Values = await connection.retry.call_with_retry(
                lambda: round_trip(commands), lambda _error: connection.disconnect()
            )
        except BaseException:
            await connection.disconnect()
            raise
        finally:
            await pool.release(connection)
        if len(distinct) == len(keys):
            return values
        by_key = dict(zip(distinct, values, strict=True))
        return [by_key[k] for k in keys]


def _bulk_string(value: bytes) -> bytes:
    """``value`` as a bulk string of the Redis protocol (RESP)."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


def _fail(batch: list[tuple[list[Any], asyncio.Future[Values]]], error: FeatureLookupError) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(error)
