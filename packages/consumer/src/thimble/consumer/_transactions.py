"""Exactly-once: outputs, dead letters and input offsets committed together in Kafka transactions.

A transaction opens at the first record sent (:meth:`Transactions.begin`, called before every
produce) or when offsets are to be committed, and commits with the offsets of the messages processed
in it and the group metadata the caller took before it last checked that it still owns them: the
broker refuses the offsets once the member's generation (epoch) has moved on since. A transaction the
broker refuses (a rebalance completed in between: ``ILLEGAL_GENERATION``; this producer fenced; any
abortable error) is aborted, and the caller resumes from the committed offsets: nothing of it is
visible to ``read_committed`` readers.

The client's calls that wait on the broker run on a thread of their own (:class:`BoundedCalls`): one
can outlive its own timeout (it waits for a group coordinator that went away to come back), and is then
given up with its producer; a new producer with the same transactional id fences it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from thimble.common.logging import get_logger
from thimble.consumer._kafka import COORDINATOR_MOVING
from thimble.consumer.errors import ServiceUnavailableError

log = get_logger(__name__)

TIMEOUT_S = 30.0
COMMIT_ATTEMPTS = 3
# How long past its own timeout a call of the client is waited for before it is given up.
GRACE_S = 5.0
# How long a new producer keeps asking for its producer id while the transaction coordinator moves.
START_DEADLINE_S = 120.0
START_BACKOFF_MAX_S = 5.0
# Answers to ``init_transactions`` that a broker restart or a moving coordinator gives.
_START_RETRIED = COORDINATOR_MOVING | {
    KafkaError.CONCURRENT_TRANSACTIONS,
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
}


class StuckCall(Exception):
    """A call of the client did not return within its timeout and the grace after it."""


class BoundedCalls:
    """Runs blocking calls one at a time on a daemon thread, each waited for at most a deadline."""

    def __init__(self) -> None:
        self._requests = self._serve()

    @staticmethod
    def _serve() -> queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...], Future[Any]]]:
        requests: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...], Future[Any]]] = (
            queue.SimpleQueue()
        )

        def serve() -> None:
            while True:
                call, args, future = requests.get()
                try:
                    future.set_result(call(*args))
                except BaseException as exc:
                    future.set_exception(exc)

        threading.Thread(target=serve, name="thimble-transactions", daemon=True).start()
        return requests

    def run(self, deadline_s: float, call: Callable[..., Any], *args: Any) -> Any:
        """``call(*args)``'s result or exception; :class:`StuckCall` when it is still running after
        ``deadline_s`` (its thread is left to it, and later calls run on a new one)."""
        future: Future[Any] = Future()
        self._requests.put((call, args, future))
        try:
            return future.result(deadline_s)
        except TimeoutError:
            if future.done():
                raise
            self._requests = self._serve()
            raise StuckCall(
                f"{getattr(call, '__name__', call)} did not return within {deadline_s:g}s"
            ) from None


def _error(exc: KafkaException) -> KafkaError | None:
    err = exc.args[0] if exc.args else None
    return err if isinstance(err, KafkaError) else None


class Transactions:
    """The transactional producer of one consumer process."""

    def __init__(
        self,
        new_producer: Callable[[], Producer],
        timeout_ms: int,
        ended: Callable[[str], None] = lambda outcome: None,
    ) -> None:
        """``ended`` is told each transaction's outcome: ``committed`` or ``aborted``."""
        # A transaction open for a third of the broker's timeout (``transaction.timeout.ms``) is
        # committed between two messages, before the broker aborts it: slow handlers make progress.
        self.max_age_s = timeout_ms / 1000 / 3
        self._new_producer = new_producer
        self._ended = ended
        self._calls = BoundedCalls()
        self.given_up: list[Producer] = []  # stuck in a call: kept, never destroyed under it
        self.producer = self._start()
        self.open = False
        self._opened_at = 0.0
        self.aborted_in_a_row = 0

    def _start(self) -> Producer:
        """A new producer with its producer id, asked again (by a fresh producer) while the transaction
        coordinator moves, for up to ``START_DEADLINE_S``; :class:`ServiceUnavailableError` after that."""
        deadline = time.monotonic() + START_DEADLINE_S
        delay = 0.5
        while True:
            producer = self._new_producer()
            try:
                self._call(producer.init_transactions)
                return producer
            except StuckCall as exc:
                self.given_up.append(producer)
                retried, reason = True, str(exc)
            except KafkaException as exc:
                err = _error(exc)
                # Each attempt has a producer of its own, so an error fatal to the last one is not in the way.
                retried = err is not None and (
                    err.code() in _START_RETRIED or (err.retriable() and not err.fatal())
                )
                reason = err.str() if err is not None else str(exc)
            if not retried or time.monotonic() + delay >= deadline:
                raise ServiceUnavailableError(f"the transactional producer could not start: {reason}")
            log.warning(
                "the transactional producer could not start yet; asking again",
                extra={"error": reason, "retry_in_s": delay},
            )
            time.sleep(delay)
            delay = min(delay * 2, START_BACKOFF_MAX_S)

    def _call(self, method: Callable[..., Any], *args: Any) -> Any:
        """A call of the client that waits on the broker, with its timeout, bounded by our own deadline."""
        return self._calls.run(TIMEOUT_S + GRACE_S, method, *args, TIMEOUT_S)

    def begin(self) -> None:
        """Open a transaction unless one is open."""
        if not self.open:
            self.producer.begin_transaction()
            self.open = True
            self._opened_at = time.monotonic()

    def aged(self) -> bool:
        """The open transaction should be committed now."""
        return self.open and time.monotonic() - self._opened_at > self.max_age_s

    def commit(self, offsets: list[TopicPartition], group_metadata: Any) -> bool:
        """Commit what was sent with ``offsets`` under ``group_metadata``; ``False`` when it was aborted
        instead."""
        if not offsets and not self.open:
            return True
        try:
            self.begin()
            if offsets:
                self._call(self.producer.send_offsets_to_transaction, offsets, group_metadata)
            self._commit_with_retries()
        except StuckCall as exc:
            log.warning(
                "the Kafka client did not return from a transaction call; its producer is given up, "
                "resuming from the last committed offsets",
                extra={"error": str(exc)},
            )
            self._aborted()
            self._give_up()
            return False
        except KafkaException as exc:
            err = _error(exc)
            log.warning(
                "transaction refused; aborted, resuming from the last committed offsets",
                extra={"error": err.str() if err is not None else str(exc)},
            )
            self._abort(fatal=err is not None and err.fatal())
            return False
        self.open = False
        self.aborted_in_a_row = 0
        self._ended("committed")
        return True

    def refused(self, exc: KafkaException) -> bool:
        """Abort after ``exc`` from a produce if it means the transaction cannot go on; whether it did."""
        err = _error(exc)
        # ``_STATE``: the transaction failed on the client's own thread (the broker refused something
        # sent for it, such as offsets under a stale generation) and takes no more records.
        if err is None or not (err.fatal() or err.txn_requires_abort() or err.code() == KafkaError._STATE):
            return False
        log.warning(
            "transaction refused a record; aborted, resuming from the last committed offsets",
            extra={"error": err.str()},
        )
        self._abort(fatal=err.fatal())
        return True

    def _commit_with_retries(self) -> None:
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                self._call(self.producer.commit_transaction)
                return
            except KafkaException as exc:
                err = _error(exc)
                if attempt == COMMIT_ATTEMPTS or err is None or not err.retriable():
                    raise
                log.warning(
                    "transaction commit not confirmed; asking again",
                    extra={"error": err.str(), "attempt": attempt, "attempts": COMMIT_ATTEMPTS},
                )

    def abort(self) -> None:
        """Abort the open transaction, if any (its records are never visible to ``read_committed``)."""
        if self.open:
            self._abort(fatal=False)

    def _abort(self, *, fatal: bool) -> None:
        self._aborted()
        if not fatal:
            try:
                self._call(self.producer.abort_transaction)
                return
            except StuckCall as exc:
                log.warning("abort did not return; starting a new producer", extra={"error": str(exc)})
                self._give_up()
                return
            except KafkaException as exc:
                log.warning("abort failed; starting a new producer", extra={"error": str(exc)})
        # A fenced or failed producer cannot go on: a new one with the same transactional id aborts
        # whatever the old one left open.
        try:
            self.producer.purge()
        except KafkaException as exc:
            log.debug("purging the failed producer failed", extra={"error": str(exc)})
        self.producer = self._start()

    def _aborted(self) -> None:
        """Count the open transaction as aborted."""
        self.open = False
        self.aborted_in_a_row += 1
        self._ended("aborted")

    def _give_up(self) -> None:
        """Leave the producer to the call it is stuck in and start a new one, which aborts its transaction."""
        self.given_up.append(self.producer)
        self.producer = self._start()
