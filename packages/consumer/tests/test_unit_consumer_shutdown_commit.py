"""The last commit at shutdown is asynchronous and the consumer goes on polling until it is back: a
commit that waits for a coordinator moving with a broker must not cost the member the group."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from confluent_kafka import KafkaError, TopicPartition

from thimble.common.config import load_settings
from thimble.consumer import App, ConsumerSettings
from thimble.consumer._runner import Runner

pytestmark = pytest.mark.unit

Offsets = list[tuple[str, int, int]]


class SlowCoordinatorConsumer:
    """Stands in for the consumer: an asynchronous commit comes back through the ``on_commit`` callback
    only on the poll ``answered_on_poll``, as librdkafka serves it once the coordinator answers;
    ``others`` are results of auto-commits served before it."""

    def __init__(self, on_commit: Any, answered_on_poll: int, others: list[Offsets] | None = None) -> None:
        self.on_commit = on_commit
        self.answered_on_poll = answered_on_poll
        self.others = list(others or [])
        self.commits: list[tuple[Offsets, bool]] = []
        self.polls = 0
        self.error: KafkaError | None = None

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commits.append(([(tp.topic, tp.partition, tp.offset) for tp in offsets], asynchronous))

    def store_offsets(self, offsets: list[TopicPartition]) -> None:
        return None

    def poll(self, timeout: float) -> None:
        self.polls += 1
        if self.others:
            self.on_commit(None, [TopicPartition(*o) for o in self.others.pop(0)])
        elif self.commits and self.polls >= self.answered_on_poll:
            self.on_commit(self.error, [TopicPartition(*o) for o in self.commits[-1][0]])


def _runner(
    answered_on_poll: int, others: list[Offsets] | None = None
) -> tuple[Runner, SlowCoordinatorConsumer]:
    app = App("shutdown-commit")

    @app.handler(source="in")
    def ignore(event: bytes) -> None:
        return None

    runner = Runner(app, load_settings(ConsumerSettings, overrides={"metrics": {"enabled": False}}))
    consumer = SlowCoordinatorConsumer(runner._commits, answered_on_poll, others)
    runner.consumer = consumer  # type: ignore[assignment]
    runner._assigned = {("in", 0), ("in", 1)}
    runner._to_store = [TopicPartition("in", 0, 5), TopicPartition("in", 0, 9), TopicPartition("in", 1, 3)]
    runner._store_completed()
    return runner, consumer


def test_the_shutdown_commit_is_asynchronous_and_polling_goes_on_until_it_is_back() -> None:
    runner, consumer = _runner(answered_on_poll=40)
    runner._commit_polling(time.monotonic() + 30)
    assert consumer.commits == [([("in", 0, 9), ("in", 1, 3)], True)]
    assert consumer.polls == 40, "polling stops once the commit is back, not before, not long after"


def test_an_auto_commit_coming_back_meanwhile_does_not_end_the_wait() -> None:
    runner, consumer = _runner(answered_on_poll=1, others=[[("in", 0, 5)], [("in", 0, 9)]])
    runner._commit_polling(time.monotonic() + 30)
    assert consumer.polls == 3


def test_a_failed_commit_is_logged_and_ends_the_wait(caplog: pytest.LogCaptureFixture) -> None:
    runner, consumer = _runner(answered_on_poll=2)
    consumer.error = KafkaError(KafkaError.UNKNOWN_MEMBER_ID)
    with caplog.at_level(logging.WARNING):
        runner._commit_polling(time.monotonic() + 30)
    assert consumer.polls == 2
    assert [r.getMessage() for r in caplog.records] == ["offset commit failed"]


def test_a_commit_that_never_comes_back_ends_at_the_deadline_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runner, consumer = _runner(answered_on_poll=10**9)
    with caplog.at_level(logging.WARNING):
        runner._commit_polling(time.monotonic() + 0.3)
    assert consumer.polls > 1
    assert any("did not come back in time" in r.getMessage() for r in caplog.records)


def test_revoked_partitions_are_not_committed_at_shutdown() -> None:
    runner, consumer = _runner(answered_on_poll=1)
    runner._release([TopicPartition("in", 1)], commit=False)
    runner._commit_polling(time.monotonic() + 30)
    assert consumer.commits == [([("in", 0, 9)], True)]


def test_nothing_stored_commits_nothing() -> None:
    runner, consumer = _runner(answered_on_poll=1)
    runner._stored.clear()
    runner._commit_polling(time.monotonic() + 30)
    assert consumer.commits == []
    assert consumer.polls == 0
