"""Where a handler's outputs go. ``sink="topic"`` is a :class:`Topic`; combine several in a list.

Each sink acknowledges an output only once it is durable there, and a message's offset is committed
only after every sink acknowledged every output of that message.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topic:
    """A Kafka topic (idempotent producer, ``acks=all``; transactional in exactly-once mode)."""

    name: str

    @property
    def label(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class OnlineStore:
    """The online feature store: one Redis hash per entity, the latest *event time* wins.

    Key ``{online_store.key_prefix}:{feature_set}:{entity}``; one field per output field, each value
    JSON-encoded, plus ``_event_time`` (epoch milliseconds). ``event_time`` names the output field that
    holds the event time (a datetime or epoch milliseconds); without it, the input record's Kafka
    timestamp is used. ``ttl_s`` expires entities that stop being updated.
    """

    feature_set: str
    entity_key: str
    event_time: str | None = None
    ttl_s: int | None = None

    @property
    def label(self) -> str:
        return self.feature_set


@dataclass(frozen=True, slots=True)
class Landing:
    """Parquet files in the warehouse landing area, one folder per UTC date of the event time.

    Files: ``{warehouse.landing}/{dataset}/date=YYYY-MM-DD/part-<timestamp>-<uuid>.parquet``, written
    in batches (``batch_rows`` rows or ``flush_interval_s`` seconds; defaults from the ``consumer``
    config) and made visible atomically. ``event_time`` as for :class:`OnlineStore`.
    """

    dataset: str
    event_time: str | None = None
    batch_rows: int | None = None
    flush_interval_s: float | None = None

    @property
    def label(self) -> str:
        return self.dataset


Sink = Topic | OnlineStore | Landing
