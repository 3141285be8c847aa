"""A transaction call the Kafka client never returns from (it waits for a group coordinator that went
away) costs the producer, never the consumer: the call is given up after its timeout and a grace."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from thimble.consumer import _transactions
from thimble.consumer._transactions import BoundedCalls, StuckCall, Transactions
from thimble.consumer.errors import ServiceUnavailableError

never = threading.Event()


class Producer:
    """Stands in for the transactional producer; ``stuck`` names the calls that never return."""

    def __init__(self, stuck: set[str]) -> None:
        self.stuck = stuck
        self.calls: list[str] = []

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name in self.stuck:
            never.wait()

    def init_transactions(self, timeout: float) -> None:
        self._call("init_transactions")

    def begin_transaction(self) -> None:
        self._call("begin_transaction")

    def send_offsets_to_transaction(self, offsets: Any, metadata: Any, timeout: float) -> None:
        self._call("send_offsets_to_transaction")

    def commit_transaction(self, timeout: float) -> None:
        self._call("commit_transaction")

    def abort_transaction(self, timeout: float) -> None:
        self._call("abort_transaction")

    def purge(self) -> None:
        self._call("purge")


@pytest.fixture(autouse=True)
def _short_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_transactions, "TIMEOUT_S", 0.1)
    monkeypatch.setattr(_transactions, "GRACE_S", 0.1)


def _transactions_whose_first_producer_sticks_in(call: str) -> tuple[Transactions, list[Producer], list[str]]:
    made: list[Producer] = []
    outcomes: list[str] = []

    def new_producer() -> Any:
        made.append(Producer({call} if not made else set()))
        return made[-1]

    return Transactions(new_producer, 30_000, ended=outcomes.append), made, outcomes


@pytest.mark.parametrize("call", ["send_offsets_to_transaction", "commit_transaction"])
def test_a_commit_stuck_in_the_client_is_given_up_with_its_producer(call: str) -> None:
    txns, made, outcomes = _transactions_whose_first_producer_sticks_in(call)
    started = time.monotonic()
    assert not txns.commit([TopicPartition("in", 0, 5)], "generation 3")
    assert time.monotonic() - started < 2
    assert outcomes == ["aborted"]
    assert txns.aborted_in_a_row == 1
    assert len(made) == 2
    assert txns.producer is made[1]
    assert made[1].calls == ["init_transactions"], "the new producer fences the stuck one"
    assert txns.given_up == [made[0]], "the stuck producer is kept, never destroyed under its call"

    assert txns.commit([TopicPartition("in", 0, 9)], "generation 3")
    assert made[1].calls[1:] == ["begin_transaction", "send_offsets_to_transaction", "commit_transaction"]


def test_an_abort_stuck_in_the_client_starts_a_new_producer() -> None:
    txns, made, outcomes = _transactions_whose_first_producer_sticks_in("abort_transaction")
    txns.begin()
    txns.abort()
    assert outcomes == ["aborted"]
    assert txns.producer is made[1]
    assert txns.given_up == [made[0]]
    assert not txns.open


def test_a_transaction_that_failed_in_the_background_is_aborted_when_a_record_is_refused() -> None:
    """librdkafka fails the open transaction on its own thread (offsets refused under a stale
    generation); the next produce then raises ``_STATE`` ("Erroneous state"), flagged neither fatal nor
    abortable: the transaction is aborted and the caller resumes, instead of the consumer stopping."""
    txns, made, outcomes = _transactions_whose_first_producer_sticks_in("nothing")
    txns.begin()
    refused = KafkaException(
        KafkaError(KafkaError._STATE, "Unable to produce message: Local: Erroneous state")
    )
    assert txns.refused(refused)
    assert made[0].calls[-1] == "abort_transaction"
    assert outcomes == ["aborted"]
    assert not txns.open
    assert not txns.refused(KafkaException(KafkaError(KafkaError._INVALID_ARG, "bad argument")))
    assert outcomes == ["aborted"]


def test_bounded_calls_return_results_and_exceptions_and_go_on_after_a_stuck_one() -> None:
    calls = BoundedCalls()
    assert calls.run(1, lambda a, b: a + b, 2, 3) == 5
    with pytest.raises(ZeroDivisionError):
        calls.run(1, lambda: 1 / 0)
    with pytest.raises(StuckCall, match=r"did not return within 0\.1s"):
        calls.run(0.1, never.wait)
    assert calls.run(1, lambda: "next") == "next"


class RefusingProducer(Producer):
    """``init_transactions`` raises ``error``."""

    def __init__(self, error: int) -> None:
        super().__init__(set())
        self.error = error

    def init_transactions(self, timeout: float) -> None:
        self._call("init_transactions")
        raise KafkaException(KafkaError(self.error))


def test_a_producer_that_cannot_start_while_the_coordinator_moves_is_made_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_transactions.time, "sleep", lambda _s: None)
    refusals = [KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS]
    made: list[Producer] = []

    def new_producer() -> Any:
        made.append(RefusingProducer(refusals.pop(0)) if refusals else Producer(set()))
        return made[-1]

    txns = Transactions(new_producer, 30_000)
    assert len(made) == 3
    assert txns.producer is made[2]


def test_a_producer_that_cannot_start_for_good_is_one_clear_error() -> None:
    made: list[Producer] = []

    def new_producer() -> Any:
        made.append(RefusingProducer(KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED))
        return made[-1]

    with pytest.raises(ServiceUnavailableError, match=r"could not start: .*[Aa]uthorization") as raised:
        Transactions(new_producer, 30_000)
    assert "\n" not in str(raised.value)
    assert len(made) == 1, "an error no retry cures is not asked again"
