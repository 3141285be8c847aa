"""A stateful app run by the CLI in subprocess tests: a count and total per entity.

Topics, the feature set's name and pacing come from the environment.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

from pydantic import BaseModel

from thimble.common.features import FeatureSet
from thimble.consumer import App

SRC = os.environ.get("THIMBLE_TEST_SRC", "src")
DST = os.environ.get("THIMBLE_TEST_DST", "dst")
SLEEP_S = float(os.environ.get("THIMBLE_TEST_SLEEP_MS", "0")) / 1000


class Event(BaseModel):
    id: int
    entity: str
    amount: int


class Totals(BaseModel):
    entity: str
    at: datetime
    count: int = 0
    total: int = 0


totals = FeatureSet(
    os.environ.get("THIMBLE_TEST_FEATURE_SET", "totals"), Totals, entity_key="entity", event_time="at"
)
app = App("consumer-stateful-test")


@app.stateful(SRC, state=totals, sink=DST)
def add(event: Event, state: Totals | None) -> Totals:
    if SLEEP_S:
        time.sleep(SLEEP_S)
    s = state or Totals(entity=event.entity, at=datetime.now(UTC))
    return Totals(entity=event.entity, at=datetime.now(UTC), count=s.count + 1, total=s.total + event.amount)
