"""Exactly-once: outputs, dead letters and input offsets committed together in Kafka transactions.

A transaction opens at the first record sent (:meth:`Transactions.begin`, called before every
produce) or when offsets are to be committed, and commits with the offsets of the messages processed
in it and the group metadata the caller took before it last checked that it still owns them: the broker
refuses the offsets once the member's generation (epoch) has moved on since. A transaction the broker refuses (a rebalance completed in
between: ``ILLEGAL_GENERATION``; this producer fenced; any abortable error) is aborted, and the caller
resumes from the committed offsets: nothing of it is visible to ``read_committed`` readers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from thimble.common.logging import get_logger

log = get_logger(__name__)

TIMEOUT_S = 30.0
COMMIT_ATTEMPTS = 3


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
        self.producer = self._start()
        self.open = False
        self._opened_at = 0.0
        self.aborted_in_a_row = 0

    def _start(self) -> Producer:
        producer = self._new_producer()
        producer.init_transactions(TIMEOUT_S)
        return producer

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
                self.producer.send_offsets_to_transaction(offsets, group_metadata, TIMEOUT_S)
            self._commit_with_retries()
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
        if err is None or not (err.fatal() or err.txn_requires_abort()):
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
                self.producer.commit_transaction(TIMEOUT_S)
                return
            except KafkaException as exc:
                err = _error(exc)
                if attempt == COMMIT_ATTEMPTS or err is None or not err.retriable():
                    raise

    def abort(self) -> None:
        """Abort the open transaction, if any (its records are never visible to ``read_committed``)."""
        if self.open:
            self._abort(fatal=False)

    def _abort(self, *, fatal: bool) -> None:
        self.open = False
        self.aborted_in_a_row += 1
        self._ended("aborted")
        if not fatal:
            try:
                self.producer.abort_transaction(TIMEOUT_S)
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
