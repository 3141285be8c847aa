"""The app the guarantee suite runs with ``thimble-consumer run integration.guarantees._app:app``.

Its shape comes from the environment (the suite sets it for each scenario): ``GUARANTEE_SOURCE``,
``GUARANTEE_OUTPUT``, ``GUARANTEE_HANDLER`` (``message`` or ``batch``), ``GUARANTEE_SINKS`` (``all``:
topic, online store and landing files; ``topic``: the topic alone, as exactly-once requires),
``GUARANTEE_FEATURE_SET``, ``GUARANTEE_DATASET``, and ``GUARANTEE_SLOW_IDS`` with ``GUARANTEE_SLOW_S``
(events whose handling takes that long, to outlast ``max.poll.interval.ms``). With ``GUARANTEE_COUNTED``,
a stateful handler counts the events of that topic per entity (count and sum of ids) in the online store.
"""

from __future__ import annotations

import os
import time
from datetime import datetime

from pydantic import BaseModel, Field

from integration.guarantees._workload import COUNTS_SUFFIX, HANDLER_POISON_AMOUNT
from thimble.common.features import FeatureSet
from thimble.consumer import App, Landing, OnlineStore, Topic
from thimble.consumer.sinks import Sink


class Event(BaseModel):
    id: int
    entity: int
    amount: float = Field(ge=0)
    ts: datetime


class Feature(BaseModel):
    id: int
    entity: int
    amount: float
    ts: datetime


class Counts(BaseModel):
    entity: int
    ts: datetime
    count: int = 0
    ids: int = 0  # the sum of the counted event ids


class HandlerPoisonError(ValueError):
    """The handler refuses an event (it becomes a dead letter at the handler stage)."""


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"{name} is not set; the guarantee suite sets it before `thimble-consumer run`")
    return value


SOURCE = _env("GUARANTEE_SOURCE")
OUTPUT = _env("GUARANTEE_OUTPUT")
BATCH = _env("GUARANTEE_HANDLER") == "batch"
SLOW_IDS = {int(i) for i in os.environ.get("GUARANTEE_SLOW_IDS", "").split(",") if i}
SLOW_S = float(os.environ.get("GUARANTEE_SLOW_S", "0"))

sinks: list[Sink] = [Topic(OUTPUT)]
if _env("GUARANTEE_SINKS") == "all":
    sinks += [
        OnlineStore(_env("GUARANTEE_FEATURE_SET"), entity_key="entity", event_time="ts"),
        Landing(_env("GUARANTEE_DATASET"), event_time="ts", batch_rows=500, flush_interval_s=1.0),
    ]

app = App("guarantees")


def _feature(event: Event) -> Feature:
    if event.id in SLOW_IDS:
        time.sleep(SLOW_S)
    return Feature(id=event.id, entity=event.entity, amount=event.amount, ts=event.ts)


if BATCH:

    @app.handler(source=SOURCE, sink=sinks, batch_size=200, batch_wait_ms=100)
    def handle_batch(events: list[Event]) -> list[Feature]:
        return [_feature(event) for event in events]

else:

    @app.handler(source=SOURCE, sink=sinks)
    def handle(event: Event) -> Feature:
        if event.amount == HANDLER_POISON_AMOUNT:
            raise HandlerPoisonError(f"event {event.id}: amount {event.amount} is refused")
        return _feature(event)


COUNTED = os.environ.get("GUARANTEE_COUNTED")
if COUNTED:
    counts = FeatureSet(
        _env("GUARANTEE_FEATURE_SET") + COUNTS_SUFFIX, Counts, entity_key="entity", event_time="ts"
    )

    @app.stateful(COUNTED, state=counts)
    def count(event: Event, state: Counts | None) -> Counts:
        s = state or Counts(entity=event.entity, ts=event.ts)
        return Counts(entity=event.entity, ts=event.ts, count=s.count + 1, ids=s.ids + event.id)
