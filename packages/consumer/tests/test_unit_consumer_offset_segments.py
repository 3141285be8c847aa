"""Offsets tracked per segment of messages, checked against a per-message reference: whatever the
order of messages, outputs, dead letters, acknowledgements and looks at the tracker, an offset handed
out never passes a message that is not processed (exactly-once) or whose outputs are not all
acknowledged (at-least-once), and once everything is acknowledged every partition reaches its end."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from thimble.common.config import load_settings
from thimble.consumer import App, ConsumerSettings
from thimble.consumer._delivery import Pending
from thimble.consumer._landing import MemoryLanding
from thimble.consumer._metrics import ConsumerMetrics
from thimble.consumer._online_store import MemoryOnlineStore
from thimble.consumer._pipeline import Backends, Interrupt, Pipeline
from thimble.consumer.testing import _Message

pytestmark = pytest.mark.unit

SINGLE, BATCH = "one-by-one", "in-batches"


class HeldTransport:
    """Records sent records and holds each one's acknowledgement until the test gives it."""

    def __init__(self) -> None:
        self.unacked: list[tuple[int, Pending]] = []  # (id of the input message, its Pending)

    def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Any, pending: Pending
    ) -> None:
        pending.remaining += 1
        assert value is not None
        source = int(value.split(b"-")[1]) if value.startswith(b"poison-") else orjson.loads(value)["id"]
        self.unacked.append((source, pending))

    def ack(self, index: int) -> int:
        source, pending = self.unacked.pop(index)
        pending(None, None)  # the record's delivery report
        return source

    def poll(self) -> None:
        return

    def flush(self, timeout: float) -> bool:
        return True


def pipeline(transport: HeldTransport) -> Pipeline:
    app = App("segments")

    @app.handler(source=SINGLE, sink="out")
    def one(event: dict[str, Any]) -> list[dict[str, Any]] | None:
        return [{"id": event["id"]}] * event["outputs"] or None

    @app.handler(source=BATCH, sink="out", batch_size=3, batch_wait_ms=0)
    def many(events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        return [[{"id": e["id"]}] * e["outputs"] for e in events]

    cfg = load_settings(ConsumerSettings, overrides={"metrics": {"enabled": False}})
    backends = Backends(transport, MemoryOnlineStore, MemoryLanding())  # type: ignore[arg-type]
    return Pipeline(app, cfg, backends, ConsumerMetrics(CollectorRegistry()), wait=lambda _s: False)


message = st.tuples(st.sampled_from([SINGLE, BATCH]), st.integers(0, 2), st.sampled_from(["poison", 0, 1, 2]))
feed = st.tuples(st.just("feed"), message)
# Messages fed in one run (as the worker feeds them), interrupted before the given one; the rest then
# fed in a second run.
run = st.tuples(st.just("run"), st.lists(message, min_size=1, max_size=6), st.integers(0, 6))
ack = st.tuples(st.just("ack"), st.integers(0, 10_000))
look = st.tuples(st.just("look"))
tick = st.tuples(st.just("tick"))


class InterruptBefore(Interrupt):
    """Raised from the ``n``-th look on."""

    def __init__(self, n: int) -> None:
        self.looks, self.n = 0, n

    @property  # type: ignore[override]
    def raised(self) -> bool:
        self.looks += 1
        return self.looks > self.n


class Reference:
    """Every message on its own: processed or not, and its records not yet acknowledged."""

    def __init__(self) -> None:
        self.where: dict[int, tuple[str, int, int]] = {}  # id -> topic, partition, offset
        self.processed: set[int] = set()
        self.unacked: dict[int, int] = {}
        self.next_offset: dict[tuple[str, int], int] = {}

    def ids_below(self, topic: str, partition: int, offset: int) -> list[int]:
        return [i for i, (t, p, o) in self.where.items() if (t, p) == (topic, partition) and o < offset]


@settings(max_examples=150, deadline=None)
@given(ops=st.lists(st.one_of(feed, run, ack, look, tick), max_size=60), exactly_once=st.booleans())
def test_offsets_never_pass_a_message_not_done(ops: list[tuple[Any, ...]], exactly_once: bool) -> None:
    transport = HeldTransport()
    pipe = pipeline(transport)
    ref = Reference()
    handed_out: dict[tuple[str, int], int] = {}

    def sent_since(before: int) -> None:
        for source, _pending in transport.unacked[before:]:
            ref.unacked[source] = ref.unacked.get(source, 0) + 1

    def mark_processed() -> None:
        buffered = {(m.partition(), m.offset()) for m in pipe.routes[BATCH].buffer}
        for i, (topic, partition, offset) in ref.where.items():
            if topic == SINGLE or (partition, offset) not in buffered:
                ref.processed.add(i)

    def look_at_tracker() -> None:
        positions = pipe.processed_positions() if exactly_once else pipe.completed()
        for tp in positions:
            key = (tp.topic, tp.partition)
            assert tp.offset > handed_out.get(key, -1), "an offset went backwards or repeated"
            handed_out[key] = tp.offset
            for i in ref.ids_below(tp.topic, tp.partition, tp.offset):
                assert i in ref.processed, f"{tp} passes message {ref.where[i]}, not processed"
                if not exactly_once:
                    assert not ref.unacked.get(i), f"{tp} passes message {ref.where[i]}, not acknowledged"

    def message_of(topic: str, partition: int, outputs: Any) -> _Message:
        offset = ref.next_offset.get((topic, partition), 0)
        ref.next_offset[(topic, partition)] = offset + 1
        ident = len(ref.where)
        ref.where[ident] = (topic, partition, offset)
        value = (
            f"poison-{ident}".encode()
            if outputs == "poison"
            else orjson.dumps({"id": ident, "outputs": outputs})
        )
        return _Message(topic, partition, offset, None, value, None, 0)

    for op in ops:
        before = len(transport.unacked)
        if op[0] == "feed":
            pipe.feed(message_of(*op[1]))
        elif op[0] == "run":
            msgs = [message_of(*m) for m in op[1]]
            stopped = pipe.feed_run(msgs, 0, len(msgs), InterruptBefore(op[2]))
            assert stopped == min(op[2], len(msgs))
            assert pipe.feed_run(msgs, stopped, len(msgs), Interrupt()) == len(msgs)
        elif op[0] == "ack" and transport.unacked:
            ref.unacked[transport.ack(op[1] % len(transport.unacked))] -= 1
        elif op[0] == "tick":
            pipe.tick()
        elif op[0] == "look":
            look_at_tracker()
        sent_since(before)
        mark_processed()

    before = len(transport.unacked)
    pipe.flush_batches()
    sent_since(before)
    mark_processed()
    while transport.unacked:
        ref.unacked[transport.ack(0)] -= 1
    look_at_tracker()
    for (topic, partition), end in ref.next_offset.items():
        assert handed_out.get((topic, partition)) == end, f"{topic}[{partition}] never reached {end}"
