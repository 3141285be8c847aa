"""Exactly-once: when the consumer goes back on a partition without a rewind of ours, the messages it
reads again are not handled again (their outputs are in a transaction committed or still open)."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

from thimble.common.config import load_settings
from thimble.consumer import App, ConsumerSettings
from thimble.consumer._runner import Runner
from thimble.testing import wait_until


class RecordingPipeline:
    """Stands in for the pipeline: records the offsets fed to it."""

    def __init__(self) -> None:
        self.fed: list[int] = []

    def feed(self, msg: Any) -> None:
        self.fed.append(msg.offset())

    def end_batch(self) -> None:
        return

    def tick(self) -> None:
        return

    def processed_positions(self) -> list[Any]:
        return []


class CommittingTransactions:
    """Stands in for the transactions: every commit succeeds."""

    aborted_in_a_row = 0

    def aged(self) -> bool:
        return False

    def commit(self, _offsets: list[Any], _group_metadata: Any) -> bool:
        return True


def _messages(offsets: range) -> list[Any]:
    return [
        SimpleNamespace(topic=lambda: "in", partition=lambda: 0, offset=lambda o=o: o, value=lambda: b"")
        for o in offsets
    ]


def test_messages_read_again_without_a_rewind_are_not_handled_again() -> None:
    app = App("went-back")

    @app.handler(source="in")
    def ignore(event: bytes) -> None:
        return None

    settings = load_settings(
        ConsumerSettings, overrides={"metrics": {"enabled": False}, "consumer": {"exactly_once": True}}
    )
    runner = Runner(app, settings)
    pipeline = runner.pipeline = RecordingPipeline()  # type: ignore[assignment]
    runner._txns = CommittingTransactions()  # type: ignore[assignment]
    worker = threading.Thread(target=runner._work_loop, daemon=True)
    with runner._cond:
        runner._queue.append((0, _messages(range(5))))
        runner._queue.append((0, _messages(range(8))))  # went back to 0, then on to 7
        runner._cond.notify()
    worker.start()
    try:
        wait_until(lambda: len(pipeline.fed) >= 8, timeout=10, what="the worker handles both batches")
        assert pipeline.fed == list(range(8))
        # A rewind of ours starts a new epoch: what it reads again is handled again.
        with runner._cond:
            runner._queue.append((1, _messages(range(3, 6))))
            runner._cond.notify()
        wait_until(lambda: len(pipeline.fed) >= 11, timeout=10, what="the worker handles the rewound batch")
        assert pipeline.fed == [*range(8), 3, 4, 5]
    finally:
        runner._stop.set()
        worker.join(5)
    assert not worker.is_alive()
