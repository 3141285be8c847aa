"""An in-memory harness for users' tests: the production decoding, handlers, sinks and dead letters.

with TestClient(app) as t:
    t.send("client-events", {"client_id": 42, "kind": "order", "amount": 9.5, "ts": "2026-01-01T00:00:00Z"})
    assert t.outputs("client-features") == [{"client_id": 42, ...}]
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client import CollectorRegistry

from thimble.common.features import FeatureSet, online_key
from thimble.consumer import _log_context as log_context
from thimble.consumer._codec import encode_key, encode_value
from thimble.consumer._dead_letters import DeadLetter
from thimble.consumer._landing import MemoryLanding
from thimble.consumer._metrics import ConsumerMetrics
from thimble.consumer._online_hash import entity_text
from thimble.consumer._online_store import MemoryOnlineStore
from thimble.consumer._pipeline import Backends, Pipeline
from thimble.consumer._state import parse
from thimble.consumer._state_store import MemoryStates
from thimble.consumer._transport import Headers, MemoryTransport, SentRecord
from thimble.consumer.config import ConsumerSettings
from thimble.consumer.context import serve
from thimble.consumer.errors import ConsumerError

if TYPE_CHECKING:
    from types import TracebackType

    from thimble.consumer.app import App

__all__ = ["DeadLetter", "SentRecord", "TestClient"]


class _Message:
    """A record as confluent-kafka presents it."""

    __slots__ = ("_headers", "_key", "_offset", "_partition", "_timestamp", "_topic", "_value")

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None,
        timestamp_ms: int,
    ) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset
        self._key, self._value, self._headers, self._timestamp = key, value, headers, timestamp_ms

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> Headers | None:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return 1, self._timestamp

    def error(self) -> None:
        return None


class TestClient:
    """Feeds records to an app's handlers in memory; inspect topics, dead letters, online store, landing."""

    __test__ = False  # not a pytest test class

    def __init__(self, app: App, settings: ConsumerSettings | None = None) -> None:
        self.app = app
        self.settings = settings or ConsumerSettings()
        self.resources = serve(self.settings)  # what handlers reach through Context
        self.transport = MemoryTransport()
        self.online_store = MemoryOnlineStore()
        self.landing = MemoryLanding()
        self.metrics = ConsumerMetrics(CollectorRegistry())
        backends = Backends(
            self.transport,
            lambda: self.online_store,
            self.landing,
            lambda: MemoryStates(self.online_store.hashes),
        )
        self.pipeline = Pipeline(app, self.settings, backends, self.metrics, wait=lambda _s: False)
        self._offsets: dict[tuple[str, int], int] = {}
        self._sent: dict[tuple[str, int], list[_Message]] = {}
        self._log_context = log_context.installed()

    def __enter__(self) -> TestClient:
        self._log_context.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.flush()
            self.pipeline.close()
        finally:
            self._log_context.__exit__()

    def send(
        self,
        topic: str,
        value: Any,
        *,
        key: str | bytes | int | None = None,
        headers: dict[str, str | bytes | None] | None = None,
        partition: int = 0,
        timestamp_ms: int | None = None,
    ) -> None:
        """Deliver one record to the handler of ``topic`` (models/dicts/lists are sent as JSON)."""
        if topic not in self.pipeline.routes:
            handled = ", ".join(sorted(self.pipeline.routes)) or "none"
            raise ConsumerError(f"no handler reads topic {topic!r} (handled topics: {handled})")
        offset = self._offsets.get((topic, partition), 0)
        self._offsets[(topic, partition)] = offset + 1
        raw = None if value is None else encode_value(value)
        msg = _Message(
            topic,
            partition,
            offset,
            encode_key(key),
            raw,
            [(k, v.encode() if isinstance(v, str) else v) for k, v in (headers or {}).items()] or None,
            timestamp_ms if timestamp_ms is not None else int(time.time() * 1000),
        )
        self._sent.setdefault((topic, partition), []).append(msg)
        self._feed([msg])

    def redeliver(self, topic: str, *, partition: int = 0, from_offset: int = 0) -> None:
        """Deliver again, in one batch, the records sent to ``topic[partition]`` from ``from_offset`` on,
        as a consumer restarted from that committed offset would (after a crash or a rebalance)."""
        sent = self._sent.get((topic, partition), [])
        self._feed([msg for msg in sent if msg.offset() >= from_offset])

    def _feed(self, msgs: list[_Message]) -> None:
        try:
            for msg in msgs:
                log_context.set_current(msg)
                self.pipeline.feed(msg)
        finally:
            log_context.set_current(None)
        self.pipeline.end_batch()

    def flush(self) -> None:
        """Handle open batches and flush every sink now (reading methods do this first)."""
        self.pipeline.flush_batches()
        self.pipeline.flush_sinks(0)

    def records(self, topic: str) -> list[SentRecord]:
        """The records written to ``topic`` (outputs, or dead letters for a dead-letter topic)."""
        self.flush()
        return list(self.transport.records.get(topic, []))

    def outputs(self, topic: str) -> list[Any]:
        """The values written to ``topic``, parsed as JSON (as text or bytes when they are not JSON)."""
        values: list[Any] = []
        for record in self.records(topic):
            if record.value is None:  # a tombstone
                values.append(None)
                continue
            try:
                values.append(orjson.loads(record.value))
            except orjson.JSONDecodeError:
                try:
                    values.append(record.value.decode("utf-8"))
                except UnicodeDecodeError:
                    values.append(record.value)
        return values

    def dead_letters(self, source: str | None = None) -> list[DeadLetter]:
        """Dead letters of records read from ``source`` (every source when omitted)."""
        self.flush()
        suffix = self.settings.consumer.dlq_suffix
        topics = {h.dlq_topic(s, suffix) for h in self.app.handlers for s in h.sources if source in (None, s)}
        out = [
            DeadLetter.from_record(r.key, r.value, r.headers)
            for t in sorted(topics)
            for r in self.transport.records.get(t, [])
        ]
        return [d for d in out if source is None or d.original_topic == source]

    def online(self, feature_set: str | FeatureSet, entity: Any) -> dict[str, Any] | None:
        """An entity's features as thimble-modelops reads them (each field JSON-decoded), or ``None``."""
        self.flush()
        name = feature_set.name if isinstance(feature_set, FeatureSet) else feature_set
        key = online_key(self.settings.online_store.key_prefix, name, entity_text(entity))
        stored = self.online_store.hashes.get(key)
        return None if stored is None else {k: orjson.loads(v) for k, v in stored.items()}

    def state(self, feature_set: FeatureSet, entity: Any) -> Any:
        """The state a stateful handler keeps for ``entity``, as its feature set's schema, or ``None``."""
        self.flush()
        stored = self.online_store.hashes.get(
            feature_set.online_key(self.settings.online_store.key_prefix, entity)
        )
        return None if stored is None else parse(feature_set, stored).value

    def landed(self, dataset: str | FeatureSet) -> list[dict[str, Any]]:
        """Rows landed for ``dataset`` (with ``_kafka_*``, ``_landed_at`` and their ``date`` partition)."""
        self.flush()
        name = dataset.dataset if isinstance(dataset, FeatureSet) else dataset
        return list(self.landing.rows.get(name, []))
