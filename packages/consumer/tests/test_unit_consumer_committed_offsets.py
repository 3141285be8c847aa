"""Committed offsets are read whole or not at all, and an exactly-once commit never carries a group
generation newer than the last check that its partitions are still owned."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

from thimble.common.config import load_settings
from thimble.consumer import App, ConsumerSettings
from thimble.consumer._dlq_replay import _Replay
from thimble.consumer._kafka import committed_offsets
from thimble.consumer._runner import Runner
from thimble.consumer.errors import ServiceUnavailableError


@dataclass
class Answer:
    """A partition as ``committed`` returns it (the client's own type does not let tests set its error)."""

    topic: str
    partition: int
    offset: int
    error: KafkaError | None = None


def _tp(partition: int, offset: int, error: int | None = None) -> Any:
    return Answer("in", partition, offset, KafkaError(error) if error is not None else None)


class AnsweringConsumer:
    """Answers ``committed`` with the next of ``answers`` (a list of partitions, or an exception)."""

    def __init__(self, *answers: list[TopicPartition] | KafkaException) -> None:
        self.answers = list(answers)
        self.asked = 0
        self.seeks: list[TopicPartition] = []

    def committed(self, tps: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        self.asked += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, KafkaException):
            raise answer
        return answer

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition("in", 0), TopicPartition("in", 1)]

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append(tp)


PARTITIONS = [TopicPartition("in", 0), TopicPartition("in", 1)]


def test_a_partition_answering_with_an_open_transaction_is_asked_again() -> None:
    consumer = AnsweringConsumer(
        [_tp(0, -1001, KafkaError.UNSTABLE_OFFSET_COMMIT), _tp(1, 7)],
        KafkaException(KafkaError(KafkaError.COORDINATOR_LOAD_IN_PROGRESS)),
        [_tp(0, 40), _tp(1, 7)],
    )
    offsets = committed_offsets(consumer, PARTITIONS, 5)  # type: ignore[arg-type]
    assert [(tp.partition, tp.offset) for tp in offsets] == [(0, 40), (1, 7)]
    assert consumer.asked == 3


@pytest.mark.parametrize(
    "error", [KafkaError.GROUP_AUTHORIZATION_FAILED, KafkaError.STALE_MEMBER_EPOCH, KafkaError.UNKNOWN]
)
def test_a_partition_with_an_error_of_its_own_is_never_read_as_none_committed(error: int) -> None:
    consumer = AnsweringConsumer([_tp(0, -1001, error), _tp(1, 7)])
    with pytest.raises(KafkaException) as raised:
        committed_offsets(consumer, PARTITIONS, 0.3)  # type: ignore[arg-type]
    assert raised.value.args[0].code() == error


def _runner() -> Runner:
    app = App("committed-offsets")

    @app.handler(source="in")
    def ignore(event: bytes) -> None:
        return None

    settings = load_settings(
        ConsumerSettings, overrides={"metrics": {"enabled": False}, "consumer": {"exactly_once": True}}
    )
    return Runner(app, settings)


def test_a_rewind_that_cannot_read_every_committed_offset_seeks_nothing_and_tries_again() -> None:
    runner = _runner()
    consumer = runner.consumer = AnsweringConsumer(  # type: ignore[assignment]
        [_tp(0, -1001, KafkaError.STALE_MEMBER_EPOCH), _tp(1, 7)]
    )
    runner._rewind = True
    runner._rewind_to_committed()
    assert consumer.seeks == [], "a partition with an unreadable offset must not start over"
    assert runner._rewind, "the rewind is tried again"

    consumer.answers = [[_tp(0, -1001), _tp(1, 7)]]
    runner._rewind_to_committed()
    assert [(tp.partition, tp.offset) for tp in consumer.seeks] == [(0, OFFSET_BEGINNING), (1, 7)]
    assert not runner._rewind


class RecordingTransactions:
    def __init__(self) -> None:
        self.metadata: list[Any] = []
        self.aborted = 0
        self.aborted_in_a_row = 0
        self.producer = None

    def commit(self, offsets: list[TopicPartition], group_metadata: Any) -> bool:
        self.metadata.append(group_metadata)
        return True

    def abort(self) -> None:
        self.aborted += 1


class Positions:
    """The pipeline's processed positions; asking for them lets the main thread move on meanwhile."""

    def __init__(self, meanwhile: Any) -> None:
        self.meanwhile = meanwhile

    def processed_positions(self) -> list[TopicPartition]:
        self.meanwhile()
        return [TopicPartition("in", 0, 5)]

    def reset(self) -> None:
        return


def test_a_commit_carries_the_generation_seen_before_its_ownership_check() -> None:
    runner = _runner()
    txns = runner._txns = RecordingTransactions()  # type: ignore[assignment]
    runner._group_metadata = "generation 4"

    def revoked_meanwhile() -> None:
        runner._abort_pending = True
        runner._group_metadata = "generation 5"

    runner.pipeline = Positions(revoked_meanwhile)  # type: ignore[assignment]
    runner.transport = SimpleNamespace(producer=None)  # type: ignore[assignment]
    runner._commit_transaction()
    assert txns.metadata == ["generation 4"], "offsets of revoked partitions would pass under generation 5"

    runner._commit_transaction()
    assert txns.aborted == 1, "the revocation's abort still comes next"


def test_a_replay_that_cannot_read_its_committed_offsets_says_so_in_one_line() -> None:
    replay = object.__new__(_Replay)
    replay.topic, replay.parts = "in.dlq", {}
    consumer = AnsweringConsumer([_tp(0, -1001, KafkaError.GROUP_AUTHORIZATION_FAILED)])
    consumer.list_topics = lambda topic, timeout: SimpleNamespace(  # type: ignore[attr-defined]
        topics={topic: SimpleNamespace(error=None, partitions={0: None})}
    )
    replay.consumer = consumer  # type: ignore[assignment]
    with pytest.raises(ServiceUnavailableError, match=r"'in\.dlq'.*[Aa]uthorization") as raised:
        replay._assign()
    assert "\n" not in str(raised.value)
    assert replay.parts == {}, "nothing is replayed from an offset it could not read"
