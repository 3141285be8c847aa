"""Kafka client errors during an outage as a few lines, not one line per reconnect attempt.

While a broker is down librdkafka reports every failed attempt of every client, several a second. The
first error of an outage is logged as it comes; later ones are counted and summarised periodically; when
none has come for a while, one line says they stopped and how many there were.
"""

from __future__ import annotations

import logging
import threading
import time

from thimble.common.logging import get_logger

LIBRDKAFKA_LOGGER = "thimble.consumer.librdkafka"
RUNNER_LOGGER = "thimble.consumer._runner"
# What the runner logs for librdkafka's error callback and for errors returned by poll.
RUNNER_CLIENT_ERRORS = frozenset({"kafka client error", "consume error"})
SUMMARY_EVERY_S = 30.0
QUIET_S = 15.0  # longer than librdkafka's longest reconnect backoff (10 s), so a pause is not a recovery

log = get_logger("thimble.consumer.kafka")


class OutageLog(logging.Filter):
    """A filter for the Kafka client loggers that folds the errors of an outage into a few lines."""

    def __init__(self, summary_every_s: float = SUMMARY_EVERY_S, quiet_s: float = QUIET_S) -> None:
        super().__init__()
        self.summary_every_s = summary_every_s
        self.quiet_s = quiet_s
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._started_at: float | None = None
        self._last_at = 0.0
        self._last_error = ""
        self._errors = 0
        self._unreported = 0
        self._next_summary = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        if record.name == RUNNER_LOGGER and record.msg not in RUNNER_CLIENT_ERRORS:
            return True
        error = str(record.__dict__.get("error") or record.getMessage())
        with self._lock:
            now = time.monotonic()
            self._last_at, self._last_error = now, error
            self._errors += 1
            if self._started_at is not None:
                self._unreported += 1
                return False
            self._started_at, self._unreported = now, 0
            self._next_summary = now + self.summary_every_s
        record.outage = "started; repeats are counted"
        threading.Thread(target=self._watch, name="thimble-kafka-outage-log", daemon=True).start()
        return True

    def _watch(self) -> None:
        step = min(1.0, self.quiet_s / 4, self.summary_every_s / 4)
        while not self._closed.wait(step):
            if not self._report(time.monotonic()):
                return

    def _report(self, now: float) -> bool:
        """Log a summary or the end of the outage when due; ``False`` once the outage is over."""
        with self._lock:
            if self._started_at is None:
                return False
            fields = {
                "errors": self._errors,
                "outage_s": round(now - self._started_at, 1),
                "last_error": self._last_error,
            }
            if now - self._last_at >= self.quiet_s:
                self._started_at = None
                self._errors = self._unreported = 0
                ended = True
            elif now >= self._next_summary and self._unreported:
                fields["errors_since_last_line"] = self._unreported
                self._unreported = 0
                self._next_summary = now + self.summary_every_s
                ended = False
            else:
                return True
        if ended:
            log.info("Kafka client errors stopped", extra=fields)
            return False
        log.warning("Kafka client errors continue", extra=fields)
        return True

    def close(self) -> None:
        """Stop watching; say how many errors went unreported if an outage is still on."""
        self._closed.set()
        with self._lock:
            unreported, self._unreported = self._unreported, 0
            fields = {"errors": self._errors, "errors_since_last_line": unreported}
            self._started_at = None
        if unreported:
            log.warning("Kafka client errors continued until the consumer stopped", extra=fields)


class installed:
    """Fold Kafka client errors into outage lines for the duration of a run."""

    def __init__(self) -> None:
        self.filter = OutageLog(SUMMARY_EVERY_S, QUIET_S)
        self.loggers = [logging.getLogger(LIBRDKAFKA_LOGGER), logging.getLogger(RUNNER_LOGGER)]

    def __enter__(self) -> OutageLog:
        for logger in self.loggers:
            logger.addFilter(self.filter)
        return self.filter

    def __exit__(self, *exc: object) -> None:
        for logger in self.loggers:
            logger.removeFilter(self.filter)
        self.filter.close()
