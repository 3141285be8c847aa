"""Stateful handlers in the in-memory harness: the state, its outputs, redelivery and the declaration."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from pydantic import BaseModel

from thimble.common.features import FeatureSet
from thimble.consumer import (
    App,
    ConsumerSettings,
    Context,
    HandlerSignatureError,
    Landing,
    OnlineStore,
    TestClient,
)
from thimble.consumer._describe import describe_app
from thimble.consumer._runner import Runner
from thimble.consumer._state_store import MemoryStates, Write
from thimble.consumer._stateful import StatefulProcessor
from thimble.consumer.errors import ConsumerError
from thimble.consumer.testing import _Message

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Purchase(BaseModel):
    client_id: str
    amount: float
    channel: str
    event_time: datetime


class ClientStats(BaseModel):
    client_id: str
    event_time: datetime
    purchases: int = 0
    mean_amount: float = 0.0
    last_channel: str | None = None


stats = FeatureSet("client-stats", ClientStats, entity_key="client_id", event_time="event_time")


def make_app(**sinks: object) -> App:
    app = App("client-stats")

    @app.stateful("purchases", state=stats, sink=["client-stats", Landing(stats)])
    def count(event: Purchase, state: ClientStats | None) -> ClientStats:
        s = state or ClientStats(client_id=event.client_id, event_time=event.event_time)
        n = s.purchases + 1
        return ClientStats(
            client_id=event.client_id,
            event_time=event.event_time,
            purchases=n,
            mean_amount=s.mean_amount + (event.amount - s.mean_amount) / n,
            last_channel=event.channel,
        )

    return app


def purchase(client: str, amount: float, channel: str = "web", minutes: int = 0) -> dict[str, object]:
    return {
        "client_id": client,
        "amount": amount,
        "channel": channel,
        "event_time": (T0 + timedelta(minutes=minutes)).isoformat(),
    }


def test_count_mean_and_last_per_entity_and_every_new_state_goes_to_the_sinks() -> None:
    with TestClient(make_app()) as t:
        t.send("purchases", purchase("c1", 10, "web", 1), key="c1")
        t.send("purchases", purchase("c2", 5, "app", 2), key="c2")
        t.send("purchases", purchase("c1", 20, "app", 3), key="c1")
        assert t.state(stats, "c1") == ClientStats(
            client_id="c1",
            event_time=T0 + timedelta(minutes=3),
            purchases=2,
            mean_amount=15,
            last_channel="app",
        )
        assert t.state(stats, "c2").purchases == 1
        assert t.state(stats, "c3") is None
        assert [o["purchases"] for o in t.outputs("client-stats")] == [1, 1, 2]
        assert [r["purchases"] for r in t.landed(stats)] == [1, 1, 2]
        online = t.online(stats, "c1")
        assert online is not None
        assert (online["purchases"], online["_applied:purchases:0"]) == (2, 2)
        assert online["_event_time"] == int((T0 + timedelta(minutes=3)).timestamp() * 1000)


def test_a_redelivered_event_is_counted_once_and_the_state_goes_out_once_more() -> None:
    with TestClient(make_app()) as t:
        for i in range(3):
            t.send("purchases", purchase("c1", 10, minutes=i), key="c1")
        t.send("purchases", purchase("c1", 40, minutes=3), key="c1")
        t.redeliver("purchases", from_offset=1)  # a restart from committed offset 1
        t.redeliver("purchases", from_offset=0)
        state = t.state(stats, "c1")
        assert (state.purchases, state.mean_amount) == (4, 17.5)
        # Four new states, then the current state once per replayed batch.
        assert [o["purchases"] for o in t.outputs("client-stats")] == [1, 2, 3, 4, 4, 4]
        assert _metric(t, "thimble_consumer_state_skipped_messages_total") == 3 + 4


def test_partitions_keep_their_own_applied_offset() -> None:
    with TestClient(make_app()) as t:
        t.send("purchases", purchase("c1", 10), partition=0)
        t.send("purchases", purchase("c1", 10), partition=1)  # offset 0 of another partition: new
        t.redeliver("purchases", partition=0)
        t.redeliver("purchases", partition=1)
        assert t.state(stats, "c1").purchases == 2
        online = t.online(stats, "c1")
        assert online is not None
        assert (online["_applied:purchases:0"], online["_applied:purchases:1"]) == (0, 0)


def test_event_time_of_the_state_never_goes_back() -> None:
    with TestClient(make_app()) as t:
        t.send("purchases", purchase("c1", 10, minutes=5))
        t.send("purchases", purchase("c1", 10, minutes=1))  # late: counted, stamped 1 ms after the state
        t.send("purchases", purchase("c1", 10, minutes=5))
        times = [datetime.fromisoformat(o["event_time"]) for o in t.outputs("client-stats")]
        five = T0 + timedelta(minutes=5)
        assert times == [five, five + timedelta(milliseconds=1), five + timedelta(milliseconds=2)]
        assert t.state(stats, "c1").purchases == 3


def test_events_of_one_entity_in_one_batch_are_applied_in_order_and_written_once() -> None:
    app = App("client-stats")
    seen: list[tuple[int, int]] = []

    @app.stateful("purchases", state=stats)
    def count(event: Purchase, state: ClientStats | None, ctx: Context) -> ClientStats:
        n = (state.purchases if state else 0) + 1
        seen.append((ctx.offset, n))
        return ClientStats(client_id=event.client_id, event_time=event.event_time, purchases=n)

    with TestClient(app) as t:
        writes = _count_writes(t)
        t.send("purchases", purchase("c1", 1))
        msgs = [_message(offset, purchase(client, 1)) for offset, client in ((1, "c1"), (2, "c2"), (3, "c1"))]
        for msg in msgs:
            t.pipeline.feed(msg)
        t.pipeline.end_batch()
        assert seen == [(0, 1), (1, 2), (3, 3), (2, 1)]  # entity by entity, each in offset order
        assert writes == [1, 2]  # one write for c1, then one for c1 and c2 together
        assert t.state(stats, "c1").purchases == 3


def test_a_handler_failure_or_a_wrong_state_is_dead_lettered_and_the_state_kept() -> None:
    app = App("client-stats")

    @app.stateful("purchases", state=stats, key=lambda e: e.client_id)
    def count(event: Purchase, state: ClientStats | None) -> ClientStats | dict[str, object] | None:
        if event.channel == "bug":
            raise KeyError("boom")
        if event.channel == "other":
            return {"client_id": "someone-else", "event_time": event.event_time}
        if event.channel == "skip":
            return None
        return ClientStats(
            client_id=event.client_id,
            event_time=event.event_time,
            purchases=(state.purchases if state else 0) + 1,
        )

    with TestClient(app) as t:
        t.send("purchases", purchase("c1", 1))
        for channel in ("bug", "other", "skip"):
            t.send("purchases", purchase("c1", 1, channel))
        t.send("purchases", b"not json")
        t.send("purchases", {"client_id": "", "amount": 1, "channel": "web", "event_time": T0.isoformat()})
        stages = [(d.error_stage, d.error_class.rsplit(".", 1)[-1]) for d in t.dead_letters()]
        assert stages == [
            ("handler", "KeyError"),
            ("output", "StateError"),
            ("decode", "ValidationError"),
            ("key", "StateError"),
        ]
        assert "someone-else" in t.dead_letters()[1].error_message
        assert t.state(stats, "c1").purchases == 1


def test_a_stored_state_that_no_longer_fits_the_schema_dead_letters_its_events() -> None:
    with TestClient(make_app()) as t:
        key = stats.online_key(t.settings.online_store.key_prefix, "c1")
        t.online_store.hashes[key] = {"client_id": b'"c1"', "event_time": b'"yesterday"'}
        t.send("purchases", purchase("c1", 1))
        [dead] = t.dead_letters()
        assert dead.error_stage == "state"
        assert key in dead.error_message
        assert "event_time" in dead.error_message


def test_a_lost_compare_and_set_reads_again_and_loses_no_update() -> None:
    """Another writer of the entity (another partition's owner) writes between this batch's read and write."""
    with TestClient(make_app()) as first, TestClient(make_app()) as other:
        _processor(other).states = MemoryStates(first.online_store.hashes)
        states = _processor(first).states
        real_write = states.write

        def the_other_writes_first(writes: list[Write]) -> list[bool]:
            if not other.outputs("client-stats"):
                other.send("purchases", purchase("c1", 5, "app", minutes=2), partition=1)
            return real_write(writes)

        states.write = the_other_writes_first  # type: ignore[method-assign]
        first.send("purchases", purchase("c1", 10, "web", minutes=1))
        state = first.state(stats, "c1")
        assert (state.purchases, state.mean_amount) == (2, 7.5)
        online = first.online(stats, "c1")
        assert online is not None
        assert (online["_applied:purchases:0"], online["_applied:purchases:1"], online["_version"]) == (
            0,
            0,
            2,
        )
        # The first writer's output is the state it finally wrote, over the other's.
        assert [o["purchases"] for o in first.outputs("client-stats")] == [2]
        assert _metric(first, "thimble_consumer_state_conflicts_total") == 1


def test_declaration_errors_are_one_line_naming_the_handler() -> None:
    app = App("a")

    with pytest.raises(HandlerSignatureError, match=r"annotate it as ClientStats \| None"):

        @app.stateful("purchases", state=stats)
        def wrong_state(event: Purchase, state: dict) -> None: ...  # type: ignore[type-arg]

    with pytest.raises(HandlerSignatureError, match="one event at a time"):

        @app.stateful("purchases", state=stats)
        def batch(events: list[Purchase], state: ClientStats | None) -> None: ...

    with pytest.raises(HandlerSignatureError, match="writes its state to the online store itself"):

        @app.stateful("purchases", state=stats, sink=OnlineStore(stats))
        def doubled(event: Purchase, state: ClientStats | None) -> None: ...

    with pytest.raises(HandlerSignatureError, match="ttl_s must be >= 1, got 0"):

        @app.stateful("purchases", state=stats, ttl_s=0)
        def forever(event: Purchase, state: ClientStats | None) -> None: ...

    with pytest.raises(HandlerSignatureError, match="state must be a FeatureSet"):

        @app.stateful("purchases", state="client-stats")  # type: ignore[arg-type]
        def named(event: Purchase, state: ClientStats | None) -> None: ...

    @app.stateful("purchases", state=stats)
    def fine(event: Purchase, state: ClientStats | None) -> None: ...

    with pytest.raises(
        HandlerSignatureError, match=r"'client-stats' is the state of .*fine .*no other handler may write it"
    ):

        @app.handler("other", sink=OnlineStore(stats))
        def writer(event: Purchase) -> None: ...


def test_exactly_once_refuses_a_stateful_handler_in_one_line() -> None:
    settings = ConsumerSettings(consumer={"exactly_once": True})  # type: ignore[arg-type]
    with pytest.raises(ConsumerError, match="cannot join a Kafka transaction; run it at-least-once"):
        Runner(make_app(), settings)


def _processor(t: TestClient) -> StatefulProcessor:
    [processor] = t.pipeline.processors
    assert isinstance(processor, StatefulProcessor)
    return processor


def _count_writes(t: TestClient) -> list[int]:
    """How many hashes each write of the stateful handler's states wrote, in order."""
    states = _processor(t).states
    real_write, counts = states.write, []

    def write(writes: list[Write]) -> list[bool]:
        counts.append(len(writes))
        return real_write(writes)

    states.write = write  # type: ignore[method-assign]
    return counts


def _message(offset: int, value: dict[str, object], partition: int = 0) -> _Message:
    return _Message("purchases", partition, offset, None, orjson.dumps(value), None, 0)


def _metric(t: TestClient, name: str) -> float | None:
    return t.metrics.registry.get_sample_value(name, {"handler": "count"})


def test_describe_shows_the_state_in_the_online_store() -> None:
    [handler] = describe_app(make_app(), ConsumerSettings())["handlers"]
    assert handler["sinks"][0] == {
        "kind": "state",
        "name": "client-stats",
        "entity_key": "client_id",
        "event_time": "event_time",
        "key_pattern": "features:client-stats:<client_id>",
    }
    assert [s["kind"] for s in handler["sinks"]] == ["state", "topic", "landing"]


def test_a_handler_that_changes_the_state_in_place_changes_no_state_already_sent() -> None:
    app = App("client-stats")

    @app.stateful("purchases", state=stats, sink="client-stats")
    def count(event: Purchase, state: ClientStats | None) -> ClientStats:
        if state is None:
            return ClientStats(client_id=event.client_id, event_time=event.event_time, purchases=1)
        state.purchases += 1
        return state

    with TestClient(app) as t:
        for offset in range(3):
            t.pipeline.feed(_message(offset, purchase("c1", 1, minutes=offset)))
        t.pipeline.end_batch()
        assert [o["purchases"] for o in t.outputs("client-stats")] == [1, 2, 3]
