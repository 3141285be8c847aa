"""Dead letters: the original record, unchanged, plus headers saying where it came from and why it failed."""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from typing import Any

from thimble.common.logging import get_logger
from thimble.consumer._delivery import Pending
from thimble.consumer._transport import Transport
from thimble.consumer.errors import RecordTooLarge

log = get_logger(__name__)

PREFIX = "thimble."
ORIGINAL_TOPIC = "thimble.original.topic"
ORIGINAL_PARTITION = "thimble.original.partition"
ORIGINAL_OFFSET = "thimble.original.offset"
ORIGINAL_TIMESTAMP = "thimble.original.timestamp"
ERROR_CLASS = "thimble.error.class"
ERROR_MESSAGE = "thimble.error.message"
ERROR_TRACEBACK = "thimble.error.traceback"
ERROR_STAGE = "thimble.error.stage"
ATTEMPTS = "thimble.attempts"
HANDLER = "thimble.handler"
FAILED_AT = "thimble.failed.at"
REPLAYED_FROM = "thimble.replayed.from"
# Set on a dead letter too large for the producer, sent with its value or key cut: their sizes before.
VALUE_CUT = "thimble.value.cut"
KEY_CUT = "thimble.key.cut"
HEADERS_DROPPED = "thimble.headers.dropped"

MAX_MESSAGE = 2000
MAX_TRACEBACK = 4000
KEPT_BYTES = 16 * 1024  # of a value or key (and of the original headers) when a dead letter is cut


def short_traceback(exc: BaseException, frames: int = 6) -> str:
    """The last frames of ``exc``'s traceback, bounded in size."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-frames))
    return text[-MAX_TRACEBACK:]


def error_class(exc: BaseException) -> str:
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def dead_letter_headers(
    msg: Any, exc: BaseException, stage: str, attempts: int, handler: str
) -> list[tuple[str, bytes | None]]:
    """The original record's headers as they were, null values included (minus earlier dead-letter
    ones), and the dead-letter headers."""
    original = [(k, v) for k, v in (msg.headers() or []) if not k.startswith(PREFIX)]
    timestamp = msg.timestamp()[1]
    return [
        *original,
        (ORIGINAL_TOPIC, msg.topic().encode()),
        (ORIGINAL_PARTITION, str(msg.partition()).encode()),
        (ORIGINAL_OFFSET, str(msg.offset()).encode()),
        (ORIGINAL_TIMESTAMP, str(timestamp).encode()),
        (ERROR_CLASS, error_class(exc).encode()),
        (ERROR_MESSAGE, str(exc)[:MAX_MESSAGE].encode("utf-8", "replace")),
        (ERROR_TRACEBACK, short_traceback(exc).encode("utf-8", "replace")),
        (ERROR_STAGE, stage.encode()),
        (ATTEMPTS, str(attempts).encode()),
        (HANDLER, handler.encode()),
        (FAILED_AT, str(int(time.time() * 1000)).encode()),
    ]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A dead letter as read back from its topic."""

    original_topic: str
    original_partition: int
    original_offset: int
    error_class: str
    error_message: str
    error_stage: str
    attempts: int
    traceback: str
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes | None]

    @property
    def cut(self) -> bool:
        """Whether the record was too large to dead-letter whole: its value or key is only a prefix, or
        its original headers were dropped."""
        return any(name in self.headers for name in (VALUE_CUT, KEY_CUT, HEADERS_DROPPED))

    @classmethod
    def from_record(
        cls,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes | None]] | dict[str, bytes | None],
    ) -> DeadLetter:
        h = dict(headers.items() if isinstance(headers, dict) else headers)

        def text(name: str) -> str:
            return (h.get(name) or b"").decode("utf-8", "replace")

        return cls(
            original_topic=text(ORIGINAL_TOPIC),
            original_partition=int(text(ORIGINAL_PARTITION) or -1),
            original_offset=int(text(ORIGINAL_OFFSET) or -1),
            error_class=text(ERROR_CLASS),
            error_message=text(ERROR_MESSAGE),
            error_stage=text(ERROR_STAGE),
            attempts=int(text(ATTEMPTS) or 0),
            traceback=text(ERROR_TRACEBACK),
            key=key,
            value=value,
            headers=h,
        )


class DeadLetterWriter:
    """Sends failed records to their dead-letter topic through the same transport as outputs."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def send(
        self,
        topic: str,
        msg: Any,
        exc: BaseException,
        stage: str,
        attempts: int,
        handler: str,
        pending: Pending,
    ) -> None:
        headers = dead_letter_headers(msg, exc, stage, attempts, handler)
        try:
            self.transport.send(topic, msg.key(), msg.value(), headers, pending)  # a tombstone stays null
        except RecordTooLarge:
            self._send_cut(topic, msg, headers, pending)

    def _send_cut(
        self, topic: str, msg: Any, headers: list[tuple[str, bytes | None]], pending: Pending
    ) -> None:
        """A dead letter the producer refused for its size: sent again without the traceback, then with
        its value, key and original headers cut to :data:`KEPT_BYTES` (then 1 KiB, then nothing) until
        it fits, saying so in its headers."""
        slim = [(k, v) for k, v in headers if k != ERROR_TRACEBACK]
        try:
            self.transport.send(topic, msg.key(), msg.value(), slim, pending)
            return
        except RecordTooLarge:
            pass
        key, value = msg.key(), msg.value()
        own = [(k, v) for k, v in slim if k.startswith(PREFIX)]
        original = [(k, v) for k, v in slim if not k.startswith(PREFIX)]
        for keep in (KEPT_BYTES, KEPT_BYTES // 16, 0):
            marks: list[tuple[str, bytes | None]] = []
            kept = original
            if sum(len(k) + len(v or b"") for k, v in original) > keep:
                marks.append((HEADERS_DROPPED, str(len(original)).encode()))
                kept = []
            if value is not None and len(value) > keep:
                marks.append((VALUE_CUT, str(len(value)).encode()))
            if key is not None and len(key) > keep:
                marks.append((KEY_CUT, str(len(key)).encode()))
            if not marks:
                continue  # nothing this large to cut: cut more
            cut_key = key if key is None else key[:keep]
            cut_value = value if value is None else value[:keep]
            try:
                self.transport.send(topic, cut_key, cut_value, [*kept, *own, *marks], pending)
            except RecordTooLarge:
                continue
            log.warning(
                "a dead letter was too large for the producer; it is sent cut",
                extra={
                    "dead_letter_topic": topic,
                    "kept_bytes": keep,
                    "cut": ", ".join(f"{k}={(v or b'').decode()}" for k, v in marks),
                },
            )
            return
        raise RecordTooLarge(
            f"a dead letter for topic {topic!r} does not fit the producer's message.max.bytes even with "
            "its value, key and original headers cut; raise it in consumer.producer_extra"
        )
