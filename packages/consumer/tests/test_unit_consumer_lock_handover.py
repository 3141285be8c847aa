"""The worker holds the pipeline lock through a polled batch, but hands it to the main thread (a
rebalance) between two messages."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from thimble.common.config import load_settings
from thimble.consumer import App, ConsumerSettings
from thimble.consumer._pipeline import Interrupt
from thimble.consumer._runner import Runner
from thimble.testing import wait_until

pytestmark = pytest.mark.unit

MESSAGES = 30
HANDLER_S = 0.1


class SlowPipeline:
    """Stands in for the pipeline: every message takes ``HANDLER_S``."""

    def __init__(self) -> None:
        self.fed = 0

    def feed(self, _msg: Any) -> None:
        time.sleep(HANDLER_S)
        self.fed += 1

    def feed_run(self, msgs: list[Any], start: int, stop: int, interrupt: Interrupt) -> int:
        i = start
        while i < stop and not interrupt.raised:
            self.feed(msgs[i])
            i += 1
        return i

    def end_batch(self) -> None:
        return

    def tick(self) -> None:
        return

    def completed(self) -> list[Any]:
        return []

    def inflight(self) -> bool:
        return False


def _runner(queued_batches: int = 0) -> Runner:
    app = App("lock-handover")

    @app.handler(source="in")
    def ignore(event: bytes) -> None:
        return None

    overrides = {"metrics": {"enabled": False}, "consumer": {"queued_batches": queued_batches}}
    return Runner(app, load_settings(ConsumerSettings, overrides=overrides))


def _handling(runner: Runner) -> tuple[SlowPipeline, threading.Thread]:
    """The runner's worker, started on a batch of ``MESSAGES`` slow messages, once it handles the first."""
    pipeline = runner.pipeline = SlowPipeline()  # type: ignore[assignment]
    runner.transport = SimpleNamespace(producer=SimpleNamespace(poll=lambda _t: 0))  # type: ignore[assignment]
    runner._queue.append((0, [object()] * MESSAGES))
    worker = threading.Thread(target=runner._work_loop, daemon=True)
    worker.start()
    wait_until(lambda: pipeline.fed >= 1, timeout=10, what="the worker handles the batch")
    return pipeline, worker


def test_a_rebalance_takes_the_lock_between_two_messages_of_a_batch() -> None:
    runner = _runner()
    pipeline, worker = _handling(runner)
    try:
        # The whole batch takes 3 s; the lock must come within about one message.
        assert runner._take_lock(timeout=1.0)
        fed = pipeline.fed
        time.sleep(3 * HANDLER_S)
        assert pipeline.fed == fed, "the worker went on while the main thread held the lock"
        assert fed < MESSAGES
        runner._lock.release()
        wait_until(lambda: pipeline.fed > fed, timeout=10, what="the worker resumes the batch")
    finally:
        runner.fatal = RuntimeError("test over")
        worker.join(5)
    assert not worker.is_alive()


def test_the_main_thread_is_woken_for_room_only_when_it_may_poll_ahead() -> None:
    """Without queued batches the main thread polls only once the worker waits: a wake-up when the
    worker takes a batch would only take the interpreter lock from it."""
    for queued, woken in ((0, False), (1, True)):
        runner = _runner(queued)
        runner._queue.append((0, [object()]))

        assert runner._next_batch() is not None

        assert runner._space.is_set() is woken, f"queued_batches={queued}"


def test_a_fatal_error_stops_a_run_of_messages_at_the_next_one() -> None:
    """The worker feeds a batch's messages in runs; an error set from another thread ends the run."""
    runner = _runner()
    pipeline, worker = _handling(runner)

    runner.fatal = RuntimeError("the broker refused this consumer")
    fed = pipeline.fed

    worker.join(5)
    assert not worker.is_alive()
    assert pipeline.fed <= fed + 1, "the worker went on after the error"
