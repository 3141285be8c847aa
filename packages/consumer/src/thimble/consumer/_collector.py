"""The cyclic garbage collector, tuned for the consumer process while it consumes.

A batch handler's batch is alive all at once: its decoded models, their outputs and the lists holding
them, a few tracked objects per message. With Python's default first-generation threshold (700) every
batch of 500 starts three or four collections, each promoting the batch to an older generation; that
in turn starts full collections, which walk every object the process ever imported. Both together cost
a batch handler more than a microsecond per message. While consuming, the objects that exist at start
(modules, the app, the clients) are frozen out of every collection, and the first generation's
threshold leaves room for the largest batch, so a batch dies by reference counting before a collection
starts. Cycles are still collected, only less often.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

OBJECTS_PER_MESSAGE = 20
"""Tracked objects a batch may hold per message before a collection starts (measured: about five for a
flat model and its output; nested models and lists hold more)."""

_lock = threading.Lock()
_consuming: list[int] = []  # the largest batch of each runner consuming in this process
_before: tuple[tuple[int, ...], bool] = ((700, 10, 10), False)  # the threshold; objects frozen already


@contextmanager
def tuned_for(largest_batch: int) -> Iterator[None]:
    """Freeze the objects alive now and raise the first generation's threshold to
    ``OBJECTS_PER_MESSAGE * largest_batch`` (never lower it); both are undone once the last runner of
    the process that entered leaves (a freeze made before the first is kept)."""
    global _before
    with _lock:
        if not _consuming:
            _before = (gc.get_threshold(), gc.get_freeze_count() > 0)
        _consuming.append(largest_batch)
        threshold = _before[0]
        gc.freeze()
        gc.set_threshold(max(threshold[0], OBJECTS_PER_MESSAGE * max(_consuming)), *threshold[1:])
    try:
        yield
    finally:
        with _lock:
            _consuming.remove(largest_batch)
            if not _consuming:
                threshold, frozen_before = _before
                gc.set_threshold(*threshold)
                if not frozen_before:
                    gc.unfreeze()
