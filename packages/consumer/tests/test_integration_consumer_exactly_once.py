"""Exactly-once against the real broker: batch handlers, rebalances, several processes in one group."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from pydantic import BaseModel

from thimble.consumer import App, group_lag
from thimble.consumer._kafka import committed_offsets
from thimble.testing import produce, wait_until

from .conftest import busy_copy, join_while_busy, make_settings, start_cli

pytestmark = pytest.mark.integration


class Event(BaseModel):
    id: int


class Out(BaseModel):
    id: int


def _ids(records: list[Any]) -> list[int]:
    return [orjson.loads(m.value())["id"] for m in records]


def _assert_once(records: list[Any], n: int) -> None:
    counts = Counter(_ids(records))
    assert sorted(counts) == list(range(n)), f"missing: {sorted(set(range(n)) - set(counts))[:20]}"
    duplicated = [i for i, c in counts.items() if c > 1]
    assert not duplicated, f"committed twice: {duplicated[:20]}"


def _committed(settings: Any, src: str) -> int:
    return sum(p.committed or 0 for p in group_lag(settings, src, [src]))


def test_batch_handler_idle_and_shutdown_flushes_are_transactional(
    kafka_topic, kafka_config, reader, start_app
) -> None:
    """Partial batches flushed when the source goes idle and at shutdown produce inside a transaction."""
    src, dst = kafka_topic("src", partitions=2), kafka_topic("dst")
    app = App("eos-batch")

    @app.handler(source=src, sink=dst, batch_size=500, batch_wait_ms=100)
    def copy(events: list[Event]) -> list[Out]:
        return [Out(id=e.id) for e in events]

    settings = make_settings(kafka_config, src, exactly_once=True)
    n = 1234  # not a multiple of the batch size: the tail is flushed by the idle timer
    produce(kafka_config, src, [(i, {"id": i}) for i in range(n)])
    running = start_app(app, settings)
    out = reader(dst)
    wait_until(lambda: len(out.poll()) >= n, 60, what=f"{n} committed outputs")
    wait_until(lambda: _committed(settings, src) == n, 30, what="every input offset committed")
    assert running.runner.fatal is None
    assert running.stop() == 0
    _assert_once(out.poll(), n)

    # A batch still open at shutdown (its wait far away) is handled and committed in a transaction.
    late = make_settings(kafka_config, src, exactly_once=True, batch_wait_ms=600_000)
    produce(kafka_config, src, [(i, {"id": i}) for i in range(n, n + 7)])
    running = start_app(app, late)
    wait_until(
        lambda: running.runner.metrics.consumed.labels(src)._value.get() >= 7,
        30,
        what="the late records polled",
    )
    assert running.stop() == 0
    wait_until(lambda: len(out.poll()) >= n + 7, 30, what="the open batch committed at shutdown")
    _assert_once(out.records, n + 7)
    assert _committed(settings, src) == n + 7


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_members_joining_and_leaving_abort_and_resume_never_exit(
    kafka_topic, kafka_config, reader, start_app, protocol
) -> None:
    """Rebalances while a busy member commits transactions: no member dies, nothing is lost or doubled."""
    src, dst = kafka_topic("src", partitions=4), kafka_topic("dst")
    app = App("eos-rebalance")

    @app.handler(source=src, sink=dst)
    def copy(event: Event) -> Out:
        time.sleep(0.002)
        return Out(id=event.id)

    settings = make_settings(
        kafka_config,
        src,
        exactly_once=True,
        poll_batch_size=20,
        session_timeout_ms=6000,
        group_protocol=protocol,
    )
    n = 4000
    produce(kafka_config, src, [(i, {"id": i}) for i in range(n)])
    out = reader(dst)
    first = start_app(app, settings)
    for round_ in range(3):
        have = len(out.poll())
        wait_until(lambda h=have: len(out.poll()) >= h + 200, 60, what=f"progress before join {round_}")
        second = start_app(app, settings, worker_index=1)  # a join, then a leave: two rebalances
        have = len(out.poll())
        wait_until(lambda h=have: len(out.poll()) >= h + 200, 60, what=f"progress while joined {round_}")
        assert second.stop() == 0
        assert first.runner.fatal is None, first.runner.fatal
    wait_until(lambda: len(out.poll()) >= n, 90, what="all outputs")
    wait_until(lambda: _committed(settings, src) == n, 30, what="every input offset committed")
    assert first.thread.is_alive()
    assert first.stop() == 0
    _assert_once(out.poll(), n)


def test_two_processes_on_one_host_do_not_fence_each_other(
    kafka_topic, kafka_config, reader, start_app
) -> None:
    """Two consumers of one group on one host (same worker index) share the work; neither is fenced."""
    src, dst = kafka_topic("src", partitions=4), kafka_topic("dst")
    app = App("eos-two")

    @app.handler(source=src, sink=dst)
    def copy(event: Event) -> Out:
        time.sleep(0.002)
        return Out(id=event.id)

    settings = make_settings(kafka_config, src, exactly_once=True, poll_batch_size=50)
    n = 2000
    produce(kafka_config, src, [(i, {"id": i}) for i in range(n)])
    out = reader(dst)
    one = start_app(app, settings)
    two = start_app(app, settings)
    wait_until(lambda: len(out.poll()) >= n, 90, what="all outputs")
    wait_until(lambda: _committed(settings, src) == n, 30, what="every input offset committed")
    assert one.runner.fatal is None, one.runner.fatal
    assert two.runner.fatal is None, two.runner.fatal
    assert two.stop() == 0
    assert one.stop() == 0
    _assert_once(out.poll(), n)
    assert one.runner.transactional_id != two.runner.transactional_id


def test_a_revocation_that_cannot_wait_for_a_busy_handler_aborts_its_transaction(
    kafka_topic, kafka_config, reader, start_app
) -> None:
    """A member joins while a handler is busy past the revocation's wait: the revoked partition's new
    owner does its work again, so the busy member's transaction must abort, not commit."""
    src, dst = kafka_topic("src", partitions=2), kafka_topic("dst")
    # Busy in the second partition's run of the first poll, both partitions done.
    app, calls = busy_copy("eos-busy", src, dst)
    # The revocation waits max_poll_interval_ms / 2 = 3 s for the handler, then gives up.
    settings = make_settings(
        kafka_config, src, exactly_once=True, max_poll_interval_ms=6000, session_timeout_ms=6000
    )
    n = 200
    out = reader(dst)
    busy, other = join_while_busy(start_app, app, calls, settings, kafka_config, src, n)
    wait_until(lambda: len(out.poll()) >= n, 60, what="all outputs")
    wait_until(lambda: _committed(settings, src) == n, 30, what="every input offset committed")
    aborted = busy.runner.metrics.registry.get_sample_value(
        "thimble_consumer_transactions_total", {"outcome": "aborted"}
    )
    assert other.stop() == 0
    assert busy.stop() == 0
    _assert_once(out.poll(), n)
    assert (aborted or 0) >= 1  # the busy member aborted its transaction, and says so


def test_a_slow_poll_batch_commits_before_the_transaction_times_out(
    kafka_topic, kafka_config, reader, start_app
) -> None:
    """One polled batch takes far longer than transaction.timeout.ms: it commits in several transactions
    instead of being aborted by the broker (and redone) forever."""
    src, dst = kafka_topic("src"), kafka_topic("dst")
    app = App("eos-slow")

    @app.handler(source=src, sink=dst)
    def copy(event: Event) -> Out:
        time.sleep(0.1)
        return Out(id=event.id)

    n = 130  # one poll, ~13 s: past the timeout and the broker's 10 s expiry check
    settings = make_settings(
        kafka_config,
        src,
        exactly_once=True,
        poll_batch_size=500,
        producer_extra={"transaction.timeout.ms": 2000},
    )
    produce(kafka_config, src, [(i, {"id": i}) for i in range(n)])
    out = reader(dst)
    running = start_app(app, settings)
    wait_until(lambda: len(out.poll()) >= n or running.runner.fatal, 40, what="all outputs")
    wait_until(lambda: _committed(settings, src) == n, 20, what="every input offset committed")
    assert running.stop() == 0
    _assert_once(out.poll(), n)


def test_a_consumer_going_back_without_a_rewind_handles_nothing_twice(
    kafka_topic, kafka_config, reader, start_app, caplog
) -> None:
    """The consumer reads a partition again from an older offset on its own (librdkafka resetting a
    position does so): the records handled already are committed, and are not handled again."""
    src, dst = kafka_topic("src"), kafka_topic("dst")
    app = App("eos-went-back")

    @app.handler(source=src, sink=dst)
    def copy(event: Event) -> Out:
        return Out(id=event.id)

    settings = make_settings(kafka_config, src, exactly_once=True)
    produce(kafka_config, src, [(i, {"id": i}) for i in range(100)])
    out = reader(dst)
    running = start_app(app, settings)
    wait_until(lambda: _committed(settings, src) == 100, 30, what="the first 100 committed")
    runner, enqueue, went_back = running.runner, running.runner._enqueue, []

    def going_back(batch: list[Any]) -> None:  # the next poll goes back, on the polling thread
        if not went_back:
            went_back.append(batch[0].offset())
            runner.consumer.seek(TopicPartition(src, 0, 0))
        enqueue(batch)

    runner._enqueue = going_back  # type: ignore[method-assign]
    with caplog.at_level("WARNING"):
        produce(kafka_config, src, [(i, {"id": i}) for i in range(100, 200)])
        consumed = runner.metrics.consumed.labels(src)
        wait_until(lambda: consumed._value.get() >= 400, 30, what="all 200 records read a second time")
        assert running.stop() == 0
    assert _committed(settings, src) == 200
    _assert_once(out.poll(), 200)
    assert "went back on a partition" in caplog.text


def test_batch_handler_survives_kill_9_and_restarts(kafka_topic, kafka_config, reader, tmp_path) -> None:
    """`run --exactly-once` with a batch handler, killed twice mid-run: every restart goes on to the end."""
    src, dst = kafka_topic("src", partitions=2), kafka_topic("dst")
    n = 1700
    produce(kafka_config, src, [(i, {"id": i}) for i in range(n)])
    out = reader(dst)
    log = tmp_path / "run.log"
    env = {"THIMBLE_TEST_BATCH": "1", "THIMBLE_CONSUMER__SESSION_TIMEOUT_MS": "6000"}
    for round_ in range(2):
        proc = start_cli(src, dst, src, "--exactly-once", sleep_ms=2, log=log, env=env)
        have = len(out.poll())
        wait_until(lambda h=have: len(out.poll()) > h, 60, what=f"progress in round {round_}")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    proc = start_cli(src, dst, src, "--exactly-once", log=log, env=env)
    try:
        wait_until(lambda: len(out.poll()) >= n or proc.poll() is not None, 90, what="all outputs")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(40) == 0, log.read_text()[-3000:]
    _assert_once(out.poll(), n)


def test_committed_offsets_held_by_an_open_transaction_are_waited_for(kafka_topic, kafka_config) -> None:
    """While a transaction holds a partition's offsets the broker answers "unstable"; the offsets are
    asked again until it ends, and never read as "nothing committed" (which would start it over)."""
    src = kafka_topic("src")
    tps = [TopicPartition(src, 0)]
    member = Consumer({**kafka_config, "group.id": f"g-{src}", "isolation.level": "read_committed"})
    producer = Producer({**kafka_config, "transactional.id": f"t-{src}"})
    try:
        producer.init_transactions(30)
        producer.begin_transaction()
        producer.send_offsets_to_transaction(
            [TopicPartition(src, 0, 42)], member.consumer_group_metadata(), 30
        )
        with pytest.raises(KafkaException) as unstable:
            committed_offsets(member, tps, 1.0)
        assert unstable.value.args[0].code() in (KafkaError._TIMED_OUT, KafkaError.UNSTABLE_OFFSET_COMMIT)

        committing = threading.Thread(target=producer.commit_transaction, args=(30,))
        committing.start()
        assert [tp.offset for tp in committed_offsets(member, tps, 20)] == [42]
        committing.join(30)
    finally:
        member.close()
