"""The stateful apply rule against an obviously correct reference: whatever is delivered again, in
whatever batches, by whichever of two consumers (one of them a former owner whose write races the
other's), each event of each partition counts once."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from thimble.common.features import FeatureSet
from thimble.consumer import App, TestClient
from thimble.consumer._state_store import MemoryStates, Write
from thimble.consumer._stateful import StatefulProcessor
from thimble.consumer.testing import _Message

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PARTITIONS = 3


class Event(BaseModel):
    entity: str
    amount: int
    minute: int


class Totals(BaseModel):
    entity: str
    at: datetime
    count: int = 0
    total: int = 0


totals = FeatureSet("totals", Totals, entity_key="entity", event_time="at")
app = App("totals")


@app.stateful("events", state=totals)
def add(event: Event, state: Totals | None) -> Totals:
    s = state or Totals(entity=event.entity, at=T0)
    return Totals(
        entity=event.entity,
        at=T0 + timedelta(minutes=event.minute),
        count=s.count + 1,
        total=s.total + event.amount,
    )


events = st.builds(
    Event, entity=st.sampled_from("abc"), amount=st.integers(0, 100), minute=st.integers(0, 30)
)
# advance: (actor, {partition: how many}); rewind: (actor, partition, fraction of what was delivered);
# race: (actor, {partition: n}, other actor, {partition: n}), the other's batch lands between read and write.
advance = st.tuples(
    st.just("advance"), st.integers(0, 1), st.dictionaries(st.integers(0, PARTITIONS - 1), st.integers(1, 4))
)
rewind = st.tuples(st.just("rewind"), st.integers(0, 1), st.integers(0, PARTITIONS - 1), st.floats(0, 1))
race = st.tuples(
    st.just("race"),
    st.dictionaries(st.integers(0, PARTITIONS - 1), st.integers(1, 4)),
    st.dictionaries(st.integers(0, PARTITIONS - 1), st.integers(1, 4)),
)


class Racing:
    """A consumer's view of the shared states; ``before_write`` runs once, between a read and its write."""

    def __init__(self, shared: MemoryStates, written: list[tuple[str, int]]) -> None:
        self.shared = shared
        self.written = written
        self.before_write: Any = None

    def read(self, keys: list[str]) -> list[dict[str, bytes]]:
        return self.shared.read(keys)

    def write(self, writes: list[Write]) -> list[bool]:
        interloper, self.before_write = self.before_write, None
        if interloper is not None:
            interloper()
        done = self.shared.write(writes)
        for (key, _version, fields, _ttl), ok in zip(writes, done, strict=True):
            if ok:
                self.written.append((key, int(fields[fields.index("_event_time") + 1])))
        return done

    def close(self) -> None:
        return


class Consumer:
    """One consumer process: its harness, and where it reads each partition next."""

    def __init__(self, shared: MemoryStates, written: list[tuple[str, int]]) -> None:
        self.client = TestClient(app)
        self.client.online_store.hashes = shared.hashes
        [processor] = self.client.pipeline.processors
        assert isinstance(processor, StatefulProcessor)
        self.states = processor.states = Racing(shared, written)
        self.cursor = [0] * PARTITIONS

    def batch(self, logs: list[list[Event]], counts: dict[int, int]) -> list[_Message]:
        msgs: list[_Message] = []
        for partition, n in sorted(counts.items()):
            start = self.cursor[partition]
            end = min(start + n, len(logs[partition]))
            for offset in range(start, end):
                value = orjson.dumps(logs[partition][offset].model_dump())
                msgs.append(_Message("events", partition, offset, None, value, None, 0))
            self.cursor[partition] = end
        return msgs

    def deliver(self, msgs: list[_Message]) -> None:
        for msg in msgs:
            self.client.pipeline.feed(msg)
        self.client.pipeline.end_batch()


# Two consumers made once (a harness takes longer to make than an example to run), emptied per example.
_SHARED, _WRITTEN = MemoryStates({}), []
CONSUMERS: tuple[MemoryStates, list[tuple[str, int]], list[Consumer]] = (
    _SHARED,
    _WRITTEN,
    [Consumer(_SHARED, _WRITTEN), Consumer(_SHARED, _WRITTEN)],
)


@settings(max_examples=150, deadline=None)
@given(
    logs=st.lists(st.lists(events, max_size=8), min_size=PARTITIONS, max_size=PARTITIONS),
    steps=st.lists(st.one_of(advance, rewind, race), max_size=25),
)
def test_each_event_counts_once_whatever_is_delivered_again(
    logs: list[list[Event]], steps: list[Any]
) -> None:
    shared, written, consumers = CONSUMERS
    shared.hashes.clear()
    written.clear()
    for c in consumers:
        c.cursor = [0] * PARTITIONS
    frontier = [0] * PARTITIONS  # every offset below it was delivered at least once

    def seen(c: Consumer) -> None:
        for p in range(PARTITIONS):
            frontier[p] = max(frontier[p], c.cursor[p])

    for step in steps:
        if step[0] == "advance":
            c = consumers[step[1]]
            c.deliver(c.batch(logs, step[2]))
            seen(c)
        elif step[0] == "rewind":
            # A restart from a committed offset: never past what was delivered.
            c, p = consumers[step[1]], step[2]
            c.cursor[p] = int(step[3] * frontier[p])
        else:
            first, other = consumers
            mine, theirs = first.batch(logs, step[1]), other.batch(logs, step[2])
            first.states.before_write = lambda other=other, theirs=theirs: other.deliver(theirs)
            first.deliver(mine)
            if first.states.before_write is not None:  # ``mine`` wrote nothing: no race, theirs comes after
                first.states.before_write, interloper = None, first.states.before_write
                interloper()
            seen(first)
            seen(other)
    last = consumers[0]
    last.cursor = list(frontier)
    last.deliver(last.batch(logs, dict.fromkeys(range(PARTITIONS), 10)))

    expected_count = Counter(e.entity for log in logs for e in log)
    expected_total = Counter({e.entity: 0 for log in logs for e in log})
    for log in logs:
        for e in log:
            expected_total[e.entity] += e.amount
    for entity in "abc":
        state = last.client.state(totals, entity)
        if not expected_count[entity]:
            assert state is None
            continue
        assert (state.count, state.total) == (expected_count[entity], expected_total[entity])
        latest = max(e.minute for log in logs for e in log if e.entity == entity)
        assert state.at >= T0 + timedelta(minutes=latest)
    # Every entity's successive states have strictly later event times.
    previous: dict[str, int] = {}
    for key, event_ms in written:
        assert event_ms > previous.get(key, -1)
        previous[key] = event_ms
