"""Delivery guarantees against the real broker: restarts, slow handlers, signals, workers, exactly-once."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import Counter

import orjson
import pytest
from pydantic import BaseModel

from thimble.consumer import App, Context, group_lag
from thimble.testing import produce, wait_until

from .conftest import busy_copy, join_while_busy, make_settings, start_cli

pytestmark = pytest.mark.integration


class Event(BaseModel):
    id: int


class Out(BaseModel):
    id: int


FAST_FAILOVER = {"THIMBLE_CONSUMER__SESSION_TIMEOUT_MS": "6000"}


def _ids(records: list) -> list[int]:  # type: ignore[type-arg]
    return [orjson.loads(m.value())["id"] for m in records]


def test_at_least_once_across_restarts(kafka_topic, kafka_config, reader, start_app) -> None:
    src, dst = kafka_topic("src", partitions=3), kafka_topic("dst")
    app = App("restart")

    @app.handler(source=src, sink=dst)
    def copy(event: Event) -> Out:
        return Out(id=event.id)

    settings = make_settings(kafka_config, src)
    produce(kafka_config, src, [(i, {"id": i}) for i in range(300)])
    first = start_app(app, settings)
    out = reader(dst)
    out.wait_for(1)
    assert first.stop() == 0
    produce(kafka_config, src, [(i, {"id": i}) for i in range(300, 400)])
    second = start_app(app, settings)
    wait_until(lambda: set(_ids(out.poll())) >= set(range(400)), 30, what="every id in the output")
    assert second.stop() == 0
    lag = group_lag(settings, src, [src])
    assert sum(p.committed or 0 for p in lag) == 400
    assert sum(p.lag for p in lag) == 0


def test_slow_handler_beyond_max_poll_interval(kafka_topic, kafka_config, reader, start_app) -> None:
    src, dst = kafka_topic("src", partitions=2), kafka_topic("dst")
    app = App("slow")

    @app.handler(source=src, sink=dst)
    def slow(event: Event) -> Out:
        if event.id == 0:
            time.sleep(7.5)  # longer than max.poll.interval.ms below
        return Out(id=event.id)

    settings = make_settings(
        kafka_config,
        src,
        max_poll_interval_ms=6000,
        session_timeout_ms=6000,
        queued_batches=1,
        poll_batch_size=5,
    )
    produce(kafka_config, src, [(0, {"id": 0})] + [(i, {"id": i}) for i in range(1, 40)])
    running = start_app(app, settings)
    out = reader(dst)
    wait_until(lambda: set(_ids(out.poll())) == set(range(40)), 40, what="all outputs")
    revokes = running.runner.metrics.rebalances.labels("revoke")._value.get()
    lost = running.runner.metrics.rebalances.labels("lost")._value.get()
    assert revokes == 0
    assert lost == 0
    assert running.stop() == 0
    assert Counter(_ids(out.records)).most_common(1)[0][1] == 1
    lag = group_lag(settings, src, [src])
    assert sum(p.committed or 0 for p in lag) == 40


@pytest.mark.parametrize("queued_batches", [0, 1])
def test_the_next_batch_is_polled_only_once_the_handler_is_ready_for_it(
    kafka_topic, kafka_config, reader, start_app, queued_batches: int
) -> None:
    """By default nothing more is polled while the handler is busy, so a record never waits behind a
    whole polled batch (``queued_batches=1`` polls one batch ahead); a handler busy for long still
    pauses the partitions, and every record is handled once it returns."""
    src, dst = kafka_topic("src", partitions=1), kafka_topic("dst")
    entered, release = threading.Event(), threading.Event()
    app = App("polled-when-ready")

    @app.handler(source=src, sink=dst)
    def hold(event: Event) -> Out:
        entered.set()
        release.wait(60)
        return Out(id=event.id)

    overrides = {} if queued_batches == 0 else {"queued_batches": queued_batches}
    settings = make_settings(kafka_config, src, poll_batch_size=5, **overrides)
    assert settings.consumer.queued_batches == queued_batches
    produce(kafka_config, src, [(i, {"id": i}) for i in range(50)])
    running = start_app(app, settings)
    out = reader(dst)
    assert entered.wait(30)
    runner = running.runner
    wait_until(lambda: runner._paused, 30, what="the partition paused behind the busy handler")
    polled = runner.metrics.consumed.labels(src)._value.get()
    release.set()
    wait_until(lambda: set(_ids(out.poll())) == set(range(50)), 30, what="all outputs")
    assert running.stop() == 0
    if queued_batches == 0:
        assert polled <= 5  # the batch being handled, nothing ahead of it
    else:
        assert 5 < polled <= 10  # one batch ahead


def test_a_member_joining_while_a_handler_is_busy_costs_no_membership(
    kafka_topic, kafka_config, reader, start_app, caplog
) -> None:
    """A member joins while a handler runs past max.poll.interval.ms: the revocation waits for it only
    within the interval, so the busy member keeps its place in the group and every record is handled."""
    src, dst = kafka_topic("src", partitions=2), kafka_topic("dst")
    app, calls = busy_copy("busy-join", src, dst)
    caplog.set_level(logging.WARNING)
    settings = make_settings(kafka_config, src, max_poll_interval_ms=6000, session_timeout_ms=6000)
    n = 200
    out = reader(dst)
    busy, other = join_while_busy(start_app, app, calls, settings, kafka_config, src, n)
    wait_until(lambda: set(_ids(out.poll())) == set(range(n)), 60, what="all outputs")
    revoked = busy.runner.metrics.rebalances.labels("revoke")._value.get()
    lost = busy.runner.metrics.rebalances.labels("lost")._value.get()
    assert other.stop() == 0
    assert busy.stop() == 0
    assert revoked >= 1  # the join took a partition from the busy member
    assert lost == 0
    evicted = [r.getMessage() for r in caplog.records if "maximum poll interval" in r.getMessage()]
    assert evicted == []


def test_a_partition_revoked_while_paused_is_read_again_when_it_comes_back(
    kafka_topic, kafka_config, reader, start_app
) -> None:
    """A member pauses behind a held handler; a partition goes to a joining member while it is paused and
    comes back once the member has resumed. librdkafka keeps a partition paused across a revocation, so
    the member must resume it as it goes, or what is sent to it afterwards is never read."""
    src, dst = kafka_topic("src", partitions=3), kafka_topic("dst")
    release = threading.Event()
    held, quick = App("paused-handover"), App("paused-handover")

    @held.handler(source=src, sink=dst)
    def hold(event: Event) -> Out:
        release.wait(60)
        return Out(id=event.id)

    @quick.handler(source=src, sink=dst)
    def copy(event: Event) -> Out:
        return Out(id=event.id)

    # Small polled batches and a queue of three fill while the handler is held, which pauses the member.
    settings = make_settings(kafka_config, src, poll_batch_size=5, queued_batches=3, drain_timeout_s=2)
    out = reader(dst)
    produce(kafka_config, src, [(i, {"id": i}) for i in range(100)])
    first = start_app(held, settings)
    wait_until(lambda: first.runner._paused, 30, what="the held member paused")
    second = start_app(quick, settings, worker_index=1)
    wait_until(lambda: second.runner._assigned, 60, what="a partition handed to the joining member")
    assert len(first.runner._assigned) < 3
    release.set()
    wait_until(lambda: not first.runner._paused, 30, what="the held member resumed")
    assert second.stop() == 0
    wait_until(
        lambda: len(first.runner._assigned) == 3, 60, what="every partition back with the first member"
    )
    produce(kafka_config, src, [(i, {"id": i}) for i in range(100, 300)])
    wait_until(lambda: set(_ids(out.poll())) == set(range(300)), 60, what="every record copied")
    assert first.stop() == 0


def test_an_open_batch_run_at_shutdown_keeps_polling(kafka_topic, kafka_config, start_app, caplog) -> None:
    """The shutdown runs the open batch's handler; longer than max.poll.interval.ms, it must not cost the
    group membership (the group would hand the partition on before the batch's offsets are committed)."""
    src, dst = kafka_topic("src"), kafka_topic("dst")
    app = App("slow-last-batch")
    handled: list[int] = []

    @app.handler(source=src, sink=dst, batch_size=10_000, batch_wait_ms=600_000)
    def copy(events: list[Event]) -> list[Out]:
        time.sleep(7.5)  # longer than max.poll.interval.ms below
        handled.extend(e.id for e in events)
        return [Out(id=e.id) for e in events]

    produce(kafka_config, src, [(i, {"id": i}) for i in range(50)])
    settings = make_settings(
        kafka_config, src, max_poll_interval_ms=6000, session_timeout_ms=6000, drain_timeout_s=20
    )
    running = start_app(app, settings)
    route = running.runner.pipeline.routes[src]
    wait_until(lambda: len(route.buffer) == 50, 30, what="the 50 events in the open batch")
    with caplog.at_level(logging.INFO):
        assert running.stop() == 0
    assert sorted(handled) == list(range(50))
    assert "maximum poll interval" not in caplog.text
    committed = sum(p.committed or 0 for p in group_lag(make_settings(kafka_config, src), src, [src]))
    assert committed == 50


def test_an_open_batch_outliving_the_drain_bound_at_shutdown_is_left_uncommitted(
    kafka_topic, kafka_config, start_app, caplog
) -> None:
    """The drain bound holds for the open batches a shutdown runs too: one still running past it is left
    to be delivered again, and the stop does not wait for it."""
    src, dst = kafka_topic("src"), kafka_topic("dst")
    app = App("stuck-last-batch")
    release = threading.Event()

    @app.handler(source=src, sink=dst, batch_size=10_000, batch_wait_ms=600_000)
    def copy(events: list[Event]) -> list[Out]:
        release.wait(120)
        return [Out(id=e.id) for e in events]

    produce(kafka_config, src, [(i, {"id": i}) for i in range(20)])
    settings = make_settings(kafka_config, src, drain_timeout_s=2)
    running = start_app(app, settings)
    route = running.runner.pipeline.routes[src]
    wait_until(lambda: len(route.buffer) == 20, 30, what="the 20 events in the open batch")
    try:
        with caplog.at_level(logging.INFO):
            assert running.stop() == 0  # within stop()'s wait, far shorter than the handler's
        assert "drain bound reached with the worker still busy" in caplog.text
    finally:
        release.set()
    committed = sum(p.committed or 0 for p in group_lag(make_settings(kafka_config, src), src, [src]))
    assert committed == 0


def test_sigterm_drains_commits_and_exits_zero(kafka_topic, kafka_config, reader, tmp_path) -> None:
    src, dst = kafka_topic("src"), kafka_topic("dst")
    produce(kafka_config, src, [(i, {"id": i}) for i in range(600)])
    proc = start_cli(
        src, dst, src, sleep_ms=20, log=tmp_path / "run.log", env={"THIMBLE_CONSUMER__DRAIN_TIMEOUT_S": "3"}
    )
    out = reader(dst)
    out.wait_for(20)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, (tmp_path / "run.log").read_text()[-3000:]
    assert time.monotonic() - started < 10  # the drain is bounded
    settings = make_settings(kafka_config, src)
    committed = sum(p.committed or 0 for p in group_lag(settings, src, [src]))
    produced = len(set(_ids(out.poll())))
    assert 20 <= committed <= produced  # every committed offset has its output
    assert committed < 600  # it stopped before the end
    text = (tmp_path / "run.log").read_text()
    # The last commit is asynchronous: the broker's answer came back while the consumer kept polling.
    assert "offset commit failed" not in text, text[-3000:]
    assert "did not come back in time" not in text, text[-3000:]


def test_sigterm_on_an_idle_batch_consumer_exits_at_once(kafka_topic, kafka_config, reader, tmp_path) -> None:
    """Nothing in flight: the drain must not wait for its bound (an idle worker is not a running handler)."""
    src, dst = kafka_topic("src"), kafka_topic("dst")
    produce(kafka_config, src, [(i, {"id": i}) for i in range(1200)])
    drain_s = 30
    log = tmp_path / "run.log"
    env = {"THIMBLE_TEST_BATCH": "1", "THIMBLE_CONSUMER__DRAIN_TIMEOUT_S": str(drain_s)}
    proc = start_cli(src, dst, src, log=log, env=env)
    reader(dst).wait_for(1200)
    settings = make_settings(kafka_config, src)
    wait_until(
        lambda: sum(p.lag for p in group_lag(settings, src, [src])) == 0,
        30,
        what="every message committed (the consumer idle)",
    )
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(drain_s + 15) == 0, log.read_text()[-3000:]
    # Well under the drain bound, yet loose enough for a loaded machine (interpreter exit included).
    assert time.monotonic() - started < drain_s / 3, log.read_text()[-3000:]
    text = log.read_text()
    assert "drain bound reached" not in text
    assert "stopped cleanly" in text


def test_two_workers_share_the_group(kafka_topic, kafka_config, reader, tmp_path) -> None:
    src, dst = kafka_topic("src", partitions=4), kafka_topic("dst")
    n = 1200  # ~18 s for one worker: long enough for the second to join and take partitions
    produce(kafka_config, src, [(i, {"id": i}) for i in range(n)])
    proc = start_cli(src, dst, src, "--workers", "2", sleep_ms=15, log=tmp_path / "run.log")
    out = reader(dst)
    try:
        wait_until(lambda: set(_ids(out.poll())) >= set(range(n)), 90, what="all outputs from 2 workers")
        pids = {orjson.loads(m.value())["pid"] for m in out.records}
        assert len(pids) == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(40)
    assert code == 0, (tmp_path / "run.log").read_text()[-3000:]


def test_exactly_once_survives_kill_9(kafka_topic, kafka_config, reader, tmp_path) -> None:
    src, dst = kafka_topic("src", partitions=2), kafka_topic("dst")
    n = 1500
    produce(kafka_config, src, [(i, {"id": i}) for i in range(n)])
    out = reader(dst)
    for round_ in range(2):
        proc = start_cli(
            src, dst, src, "--exactly-once", sleep_ms=2, log=tmp_path / "run.log", env=FAST_FAILOVER
        )
        have = len(out.poll())
        wait_until(lambda h=have: len(out.poll()) >= h + 150, 60, what=f"progress in round {round_}")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    proc = start_cli(src, dst, src, "--exactly-once", log=tmp_path / "run.log", env=FAST_FAILOVER)
    try:
        wait_until(lambda: set(_ids(out.poll())) >= set(range(n)), 90, what="all outputs")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(40) == 0
    counts = Counter(_ids(out.poll()))
    assert sorted(counts) == list(range(n))
    assert max(counts.values()) == 1, "an output was committed twice"


def test_context_partition_order_is_preserved(kafka_topic, kafka_config, reader, start_app) -> None:
    src, dst = kafka_topic("src", partitions=3), kafka_topic("dst")
    app = App("order")
    seen: dict[int, list[int]] = {}

    @app.handler(source=src, sink=dst)
    def record(event: Event, ctx: Context) -> Out:
        seen.setdefault(ctx.partition, []).append(ctx.offset)
        return Out(id=event.id)

    produce(kafka_config, src, [(i % 7, {"id": i}) for i in range(600)])
    running = start_app(app, make_settings(kafka_config, src, poll_batch_size=50))
    reader(dst).wait_for(600)
    assert running.stop() == 0
    assert seen
    assert all(offsets == sorted(offsets) for offsets in seen.values())


@pytest.mark.parametrize("exactly_once", [False, True], ids=["at-least-once", "exactly-once"])
def test_records_too_large_for_the_producer_are_dead_lettered_and_the_consumer_goes_on(
    kafka_topic, kafka_config, reader, start_app, exactly_once: bool
) -> None:
    from thimble.consumer._dead_letters import KEPT_BYTES, DeadLetter

    src, dst = kafka_topic("src"), kafka_topic("dst")
    app = App("too-large")

    @app.handler(source=src, sink=dst)
    def grow(event: dict) -> dict:  # type: ignore[type-arg]
        return {"id": event["id"], "blob": "x" * event.get("grow", 0)}

    # The broker takes a record of up to ~1 MiB; the consumer's producer sends up to 1,000,000 bytes.
    near_limit = b"{" + b"x" * 1_040_000
    records = [(0, {"id": 0}), (1, near_limit), (2, {"id": 2, "grow": 1_200_000}), (3, {"id": 3})]
    produce({**kafka_config, "message.max.bytes": 2_000_000}, src, records)
    running = start_app(app, make_settings(kafka_config, src, exactly_once=exactly_once))
    out, dlq = reader(dst), reader(f"{src}.dlq")
    letters = [DeadLetter.from_record(m.key(), m.value(), m.headers()) for m in dlq.wait_for(2)]
    assert _ids(out.wait_for(2)) == [0, 3]
    assert running.stop() == 0
    cut, refused = sorted(letters, key=lambda d: d.original_offset)
    assert (cut.original_offset, cut.error_stage, cut.cut) == (1, "decode", True)
    assert cut.value == near_limit[:KEPT_BYTES]
    assert cut.headers["thimble.value.cut"] == str(len(near_limit)).encode()
    assert (refused.original_offset, refused.error_stage, refused.cut) == (2, "output", False)
    assert "larger than the producer may send" in refused.error_message
    lag = group_lag(make_settings(kafka_config, src), src, [src])
    assert sum(p.lag for p in lag) == 0


def test_a_deleted_sink_topic_is_named_early_and_the_stop_logs_one_error(
    kafka_topic, kafka_config, start_app, caplog
) -> None:
    from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

    src, dst = kafka_topic("src"), kafka_topic("dst")
    app = App("deleted-sink")

    @app.handler(source=src, sink=dst)
    def copy(event: Event) -> Out:
        return Out(id=event.id)

    caplog.set_level(logging.WARNING)
    running = start_app(app, make_settings(kafka_config, src, producer_extra={"message.timeout.ms": 3000}))
    admin = AdminClient(kafka_config)
    admin.delete_topics([dst])[dst].result(timeout=30)
    wait_until(lambda: dst not in admin.list_topics(timeout=2).topics, 10, what=f"{dst} deleted")
    produce(kafka_config, src, [(1, {"id": 1})])
    running.thread.join(20)
    assert running.result == [1]  # stopped on the undelivered output, not committed
    named = [r for r in caplog.records if r.levelno == logging.WARNING and f"topic {dst!r}" in r.getMessage()]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(named) == 1, [r.getMessage() for r in caplog.records]
    assert "does not exist" in named[0].getMessage()
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert dst in errors[0].__dict__["error"]
    assert errors[0].created > named[0].created
