"""Every log line of a worker names the worker; one written while a message is handled carries its
topic, partition and offset.

Binding a context per message costs more than handling a small message, so the worker only notes the
current message in a thread-local, and a filter on the process's log handlers reads it when (and only
when) a record is actually emitted.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from thimble.consumer import _client_errors as client_errors

current = threading.local()
"""``current.msg``: the message this thread is handling now (``None`` when idle)."""


def set_current(msg: Any) -> None:
    """The message this thread is handling now (``None`` when idle)."""
    current.msg = msg


class MessageContextFilter(logging.Filter):
    """Adds ``topic``/``partition``/``offset`` of the message being handled to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = getattr(current, "msg", None)
        if msg is not None and "offset" not in record.__dict__:
            record.topic = msg.topic()
            record.partition = msg.partition()
            record.offset = msg.offset()
        return True


class WorkerFilter(logging.Filter):
    """Adds ``worker`` (the index of this consumer process in its group) to each record."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def filter(self, record: logging.LogRecord) -> bool:
        if "worker" not in record.__dict__:
            record.worker = self.index
        return True


def tag_worker(index: int) -> None:
    """Name worker ``index`` in every line this process logs (call after configuring logging)."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(WorkerFilter(index))


class installed:
    """For the duration of a run: message context on each line, Kafka client errors folded into outages."""

    def __init__(self) -> None:
        self.filter = MessageContextFilter()
        self.handlers: list[logging.Handler] = []
        self.outages = client_errors.installed()

    def __enter__(self) -> installed:
        self.handlers = list(logging.getLogger().handlers)
        for handler in self.handlers:
            handler.addFilter(self.filter)
        self.outages.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.outages.__exit__()
        for handler in self.handlers:
            handler.removeFilter(self.filter)
