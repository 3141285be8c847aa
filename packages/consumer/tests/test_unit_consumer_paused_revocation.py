"""A partition revoked while the consumer is paused leaves resumed: librdkafka keeps a partition paused
when it is assigned again, and the polling loop may resume what is assigned while the partition is away,
which would leave it unread for good once it comes back."""

from __future__ import annotations

from typing import Any

from confluent_kafka import TopicPartition

from thimble.common.config import load_settings
from thimble.consumer import App, ConsumerSettings
from thimble.consumer._runner import Runner


class PausingConsumer:
    """Stands in for the consumer: tracks which partitions are paused, as librdkafka does per partition."""

    def __init__(self) -> None:
        self.paused: set[tuple[str, int]] = set()

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= {(p.topic, p.partition) for p in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {(p.topic, p.partition) for p in partitions}

    def assignment(self) -> list[TopicPartition]:
        return []


def _runner() -> tuple[Runner, PausingConsumer]:
    app = App("paused-revocation")

    @app.handler(source="in")
    def ignore(event: bytes) -> None:
        return None

    runner = Runner(app, load_settings(ConsumerSettings, overrides={"metrics": {"enabled": False}}))
    consumer = PausingConsumer()
    runner.consumer = consumer  # type: ignore[assignment]
    return runner, consumer


def test_a_partition_revoked_while_paused_is_resumed_as_it_goes() -> None:
    runner, consumer = _runner()
    partitions = [TopicPartition("in", 0), TopicPartition("in", 1)]
    consumer.pause(partitions)
    runner._paused = True
    runner._release([partitions[0]], commit=False)
    assert consumer.paused == {("in", 1)}, "the partition that stays must stay paused"


def test_a_partition_revoked_while_not_paused_is_left_alone() -> None:
    runner, consumer = _runner()
    calls: list[Any] = []
    consumer.resume = calls.append  # type: ignore[method-assign]
    runner._release([TopicPartition("in", 0)], commit=False)
    assert calls == []
