"""The poll watch names where the polling thread is when it stays away from poll, once per stall."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import pytest

from thimble.consumer._poll_watch import PollWatch

pytestmark = pytest.mark.unit

WATCH_LOGGER = "thimble.consumer._poll_watch"


def _stalls(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == WATCH_LOGGER]


def _wait(condition: Callable[[], object], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def _committing_slowly(release: threading.Event) -> None:
    release.wait(10)


def test_a_stall_is_reported_once_with_where_the_polling_thread_is(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=WATCH_LOGGER)
    watch, stop, release = PollWatch(max_poll_interval_ms=200), threading.Event(), threading.Event()

    def polling_thread() -> None:
        watch.start(stop)
        watch.polled()
        _committing_slowly(release)

    thread = threading.Thread(target=polling_thread)
    thread.start()
    try:
        assert _wait(lambda: _stalls(caplog))
        time.sleep(0.3)  # several more checks of the same stall
    finally:
        release.set()
        thread.join()
        stop.set()
    stalls = _stalls(caplog)
    assert len(stalls) == 1
    assert "_committing_slowly" in stalls[0].__dict__["in"]
    assert stalls[0].__dict__["away_s"] >= 0.1
    assert stalls[0].__dict__["max_poll_interval_ms"] == 200


def test_time_inside_a_blocking_poll_is_no_stall(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=WATCH_LOGGER)
    watch, stop = PollWatch(max_poll_interval_ms=100), threading.Event()
    watch.start(stop)
    watch.polling()
    try:
        time.sleep(0.4)
    finally:
        stop.set()
    assert _stalls(caplog) == []


def test_the_budget_counts_from_the_last_return_from_poll() -> None:
    watch = PollWatch(max_poll_interval_ms=10_000)
    watch.polled()
    assert 4.5 < watch.budget(0.5) <= 5.0
    assert 7.5 < watch.budget(0.8) <= 8.0
    watch.polled_at -= 20
    assert watch.budget(0.5) == 0.0
