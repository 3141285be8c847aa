"""Where the polling thread is when it stays away from ``poll`` long enough to risk the group membership.

librdkafka drops a member whose application has not polled for ``max.poll.interval.ms``, and says only
that it did. The watch says, once per stall and before that happens, how long the polling thread has been
away and in which of the consumer's functions, so an operator reading the log sees the cause.
"""

from __future__ import annotations

import sys
import threading
import time
from types import FrameType

from thimble.common.logging import get_logger

log = get_logger(__name__)

SHOWN_FRAMES = 5


class PollWatch:
    """Time of the polling thread's last return from a blocking poll, and a thread watching it.

    The polling thread brackets each blocking poll with :meth:`polling` and :meth:`polled`; a callback
    librdkafka serves inside a blocking poll does not count against ``max.poll.interval.ms``, one served
    by a non-blocking call does.
    """

    def __init__(self, max_poll_interval_ms: int) -> None:
        self.max_poll_interval_ms = max_poll_interval_ms
        self.polled_at = time.monotonic()
        self.in_poll = False
        self._thread_id = threading.get_ident()

    def polling(self) -> None:
        self.in_poll = True

    def polled(self) -> None:
        self.polled_at = time.monotonic()
        self.in_poll = False

    def budget(self, share: float = 0.5) -> float:
        """Seconds left until ``share`` of ``max.poll.interval.ms`` has passed since the last poll."""
        return max(0.0, self.max_poll_interval_ms / 1000 * share - (time.monotonic() - self.polled_at))

    def start(self, stop: threading.Event) -> None:
        """Watch the calling thread (the one that polls) until ``stop`` is set."""
        self._thread_id = threading.get_ident()
        threading.Thread(
            target=self._watch, args=(stop,), name="thimble-consumer-poll-watch", daemon=True
        ).start()

    def _watch(self, stop: threading.Event) -> None:
        limit_s = self.max_poll_interval_ms / 2000
        reported_for = -1.0
        while not stop.wait(min(1.0, limit_s / 4)):
            polled_at = self.polled_at
            away_s = time.monotonic() - polled_at
            if self.in_poll or away_s < limit_s or reported_for == polled_at:
                continue
            reported_for = polled_at
            log.warning(
                "the polling thread has not polled for over half of max.poll.interval.ms; "
                "the group drops this member if it stays away for all of it",
                extra={
                    "away_s": round(away_s, 1),
                    "max_poll_interval_ms": self.max_poll_interval_ms,
                    "in": where(sys._current_frames().get(self._thread_id)),
                },
            )


def where(frame: FrameType | None) -> str:
    """The innermost functions of a stack, outermost first: ``module.function > ...``."""
    names: list[str] = []
    while frame is not None and len(names) < SHOWN_FRAMES:
        module = str(frame.f_globals.get("__name__", "?")).rsplit(".", 1)[-1]
        names.append(f"{module}.{frame.f_code.co_name}")
        frame = frame.f_back
    return " > ".join(reversed(names)) or "unknown"
