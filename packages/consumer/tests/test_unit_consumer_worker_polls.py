"""At-least-once, the worker polls for itself once it runs out of work; it never takes a batch ahead
of one the main thread polled, and leaves the consumer to the main thread when that one needs it."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

import pytest
from confluent_kafka import TopicPartition

from thimble.common.config import load_settings
from thimble.consumer import App, ConsumerSettings
from thimble.consumer._runner import Runner

pytestmark = pytest.mark.unit


class Message:
    def __init__(self, offset: int) -> None:
        self._offset = offset

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return "in"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset


class ScriptedConsumer:
    """Stands in for the consumer: each poll returns the next scripted batch; calls are noted."""

    def __init__(self, *batches: list[Message]) -> None:
        self.batches = deque(batches)
        self.calls: list[str] = []

    def poll(self, _timeout: float) -> Message | None:
        self.calls.append("poll")
        batch = self.batches[0] if self.batches else []
        return batch.pop(0) if batch else None

    def consume(self, _n: int, _timeout: float) -> list[Message]:
        self.calls.append("consume")
        return self.batches.popleft() if self.batches else []

    def store_offsets(self, offsets: list[TopicPartition]) -> None:
        self.calls.append(f"store {offsets[0].offset}")


def _runner(consumer: ScriptedConsumer) -> Runner:
    app = App("worker-polls")

    @app.handler(source="in")
    def ignore(event: bytes) -> None:
        return None

    runner = Runner(app, load_settings(ConsumerSettings, overrides={"metrics": {"enabled": False}}))
    runner.consumer = consumer  # type: ignore[assignment]
    runner._worker_polls = True
    return runner


def test_the_worker_polls_for_itself_and_leaves_the_consumer_after() -> None:
    consumer = ScriptedConsumer([Message(0), Message(1), Message(2)])
    runner = _runner(consumer)
    runner._epoch = 3
    item = runner._next_batch()
    assert item is not None
    epoch, batch = item
    assert (epoch, [m.offset() for m in batch]) == (3, [0, 1, 2])
    assert consumer.calls == ["poll", "consume"]
    assert runner._consumer_lock.acquire(blocking=False), "the consumer is left to the main thread"
    assert not runner._worker_polling
    assert not runner._space.is_set(), "the main thread is not woken for a batch the worker polled"


def test_what_is_complete_is_stored_before_the_worker_polls() -> None:
    consumer = ScriptedConsumer([Message(7)])
    runner = _runner(consumer)
    runner._to_store = [TopicPartition("in", 0, 7)]
    assert runner._next_batch() is not None
    assert consumer.calls[:2] == ["store 7", "poll"]
    assert runner._to_store == []


def test_a_batch_the_main_thread_queued_while_the_worker_took_the_consumer_comes_first() -> None:
    """The main thread polls and queues under the consumer lock; a worker that takes the lock right
    after must hand back the queued (older) batch, not poll past it."""
    consumer = ScriptedConsumer([Message(10)])
    runner = _runner(consumer)
    queued = [Message(5)]
    real = runner._consumer_lock

    class QueuedWhileTaking:
        """The lock, with the main thread's batch queued the moment before the worker takes it."""

        def acquire(self, blocking: bool = True) -> bool:
            runner._queue.append((0, queued))
            return real.acquire(blocking)

        def release(self) -> None:
            real.release()

    runner._consumer_lock = QueuedWhileTaking()  # type: ignore[assignment]
    assert runner._next_batch() == (0, queued)
    assert consumer.calls == []
    assert real.acquire(blocking=False)


@pytest.mark.parametrize("why", ["paused", "consumer wanted", "stopping", "main thread polls"])
def test_the_worker_leaves_the_consumer_to_the_main_thread(why: str) -> None:
    consumer = ScriptedConsumer([Message(0)])
    runner = _runner(consumer)
    if why == "paused":
        runner._paused = True
    elif why == "consumer wanted":
        runner._consumer_wanted = True
    elif why == "stopping":
        runner.request_stop()
    else:
        assert runner._consumer_lock.acquire()
    taken: list[Any] = []
    worker = threading.Thread(target=lambda: taken.append(runner._next_batch()))
    worker.start()
    worker.join(10)
    assert taken == [None]
    assert consumer.calls == []
    if why != "stopping":
        assert runner._space.is_set(), "the main thread is woken to poll"
