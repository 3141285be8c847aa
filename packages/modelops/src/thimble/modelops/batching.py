"""Micro-batching: concurrent requests to one model run as one call of the (vectorized) model.

Requests that arrive in the same event-loop turn are batched at no added latency (``max_wait_ms=0``): the
first yields one turn so that the others join it. Once that yield has found no one :data:`SOLO_YIELDS`
times in a row (one request at a time), a request runs at once, and only every :data:`SOLO_YIELDS`-th
yields to look again; callers on their way (below) are always waited for. A positive ``max_wait_ms``
holds a batch open that long for more. Callers still on their way to the model
(reading online features, say) announce themselves with :meth:`MicroBatcher.approaching`: a batch about
to run waits for them, up to ``hold_ms``, so that requests which arrived together are scored together
even when their feature reads came back apart. A lone request never waits. A batch never exceeds
``max_batch_size`` rows, except a single request bigger than that, which runs alone on a worker thread so
that the event loop keeps serving others. When a batch fails, its requests are retried one by one so that
only the bad request fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

Row = TypeVar("Row")
Out = TypeVar("Out")

SOLO_YIELDS = 8
"""Yields in a row that no request joined, after which a lone request no longer yields (but every
``SOLO_YIELDS``-th still does, to notice when requests come together again)."""


class MicroBatcher(Generic[Row, Out]):
    """Collects rows from concurrent callers, runs ``run(rows)`` once per batch, hands each caller its outputs."""

    def __init__(
        self,
        run: Callable[[list[Row]], list[Out]],
        max_batch_size: int = 64,
        max_wait_ms: float = 0.0,
        in_thread: bool = False,
        on_batch: Callable[[int], None] | None = None,
        hold_ms: float = 2.0,
    ) -> None:
        self._run = run
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.hold_s = hold_ms / 1000.0
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="thimble-model") if in_thread else None
        self._large: ThreadPoolExecutor | None = None
        self._on_batch = on_batch
        self._pending: list[tuple[list[Row], asyncio.Future[list[Out]]]] = []
        self._pending_rows = 0
        self._scheduled: asyncio.Handle | asyncio.TimerHandle | None = None
        self._running = False
        self._leading = False  # a request yields so that others join its batch (see _lead)
        self._approaching = 0  # callers on their way to submit (see approaching)
        self._hold: asyncio.Future[None] | None = None  # set while a leader waits for them
        self._solo_yields = 0  # yields in a row that no one joined
        self._unyielded = 0  # lone requests run at once since the last yield

    @contextmanager
    def approaching(self) -> Iterator[None]:
        """Mark the caller as on its way to :meth:`submit` for the duration of the block."""
        self._approaching += 1
        try:
            yield
        finally:
            self._approaching -= 1
            if not self._approaching:
                self._release()

    def _release(self) -> None:
        if self._hold is not None and not self._hold.done():
            self._hold.set_result(None)

    async def submit(self, rows: list[Row]) -> list[Out]:
        """The outputs for ``rows``, computed in a batch with other concurrent callers' rows."""
        loop = asyncio.get_running_loop()
        if len(rows) > self.max_batch_size:
            if self._large is None:
                self._large = ThreadPoolExecutor(1, thread_name_prefix="thimble-model-large")
            result = await loop.run_in_executor(self._large, self._safe, rows)
            if isinstance(result, BaseException):
                raise result
            return result
        future: asyncio.Future[list[Out]] = loop.create_future()
        item = (rows, future)
        self._pending.append(item)
        self._pending_rows += len(rows)
        if self._scheduled is None and not self._running and not self._leading:
            if self._executor is None and self.max_wait_s == 0 and len(self._pending) == 1:
                if self._approaching or self._yield_pays():
                    return await self._lead(item)
                self._flush()
                return item[1].result()
            if self._pending_rows >= self.max_batch_size or self.max_wait_s == 0:
                self._scheduled = loop.call_soon(self._flush)
            else:
                self._scheduled = loop.call_later(self.max_wait_s, self._flush)
        elif self._pending_rows >= self.max_batch_size:
            if isinstance(self._scheduled, asyncio.TimerHandle):
                self._scheduled.cancel()
                self._scheduled = loop.call_soon(self._flush)
            self._release()
        return await future

    def _yield_pays(self) -> bool:
        """Whether a lone request should yield for others to join (see :data:`SOLO_YIELDS`)."""
        if self._solo_yields < SOLO_YIELDS:
            return True
        self._unyielded += 1
        if self._unyielded < SOLO_YIELDS:
            return False
        self._unyielded = 0
        return True

    async def _lead(self, item: tuple[list[Row], asyncio.Future[list[Out]]]) -> list[Out]:
        """Yield once so that this turn's other requests join, wait for those approaching (up to
        ``hold_s``, and no longer once the batch is full), then run the batch in this task.

        Running it here spares the wake-up a future costs, which is most of a lone request's overhead.
        """
        self._leading = True
        try:
            await asyncio.sleep(0)
            if self._approaching and self.hold_s and self._pending_rows < self.max_batch_size:
                await self._wait_for_approaching()
        except BaseException:
            self._pending.remove(item)
            self._pending_rows -= len(item[0])
            self._reschedule()
            raise
        finally:
            self._leading = False
        self._solo_yields = self._solo_yields + 1 if len(self._pending) == 1 else 0
        self._flush()
        return item[1].result()

    async def _wait_for_approaching(self) -> None:
        loop = asyncio.get_running_loop()
        hold = self._hold = loop.create_future()
        timer = loop.call_later(self.hold_s, self._release)
        try:
            await hold
        finally:
            timer.cancel()
            self._hold = None

    def _take(self) -> list[tuple[list[Row], asyncio.Future[list[Out]]]]:
        batch: list[tuple[list[Row], asyncio.Future[list[Out]]]] = []
        rows = 0
        while self._pending and (not batch or rows + len(self._pending[0][0]) <= self.max_batch_size):
            item = self._pending.pop(0)
            batch.append(item)
            rows += len(item[0])
        self._pending_rows -= rows
        return batch

    def _flush(self) -> None:
        self._scheduled = None
        batch = self._take()
        if self._executor is None:
            self._deliver(batch, self._compute(batch))
            self._reschedule()
        else:
            self._running = True
            loop = asyncio.get_running_loop()
            task = loop.run_in_executor(self._executor, self._compute, batch)
            task.add_done_callback(lambda t: self._after_thread(batch, t))

    def _after_thread(
        self, batch: list[tuple[list[Row], asyncio.Future[list[Out]]]], task: asyncio.Future[Any]
    ) -> None:
        self._running = False
        self._deliver(batch, task.result())
        self._reschedule()

    def _reschedule(self) -> None:
        if self._pending and self._scheduled is None:
            self._scheduled = asyncio.get_running_loop().call_soon(self._flush)

    def _compute(
        self, batch: list[tuple[list[Row], asyncio.Future[list[Out]]]]
    ) -> list[list[Out] | BaseException]:
        if len(batch) == 1:
            return [self._safe(batch[0][0])]
        rows = [row for chunk, _ in batch for row in chunk]
        try:
            outputs = self._run(rows)
        except Exception:
            return [self._safe(chunk) for chunk, _ in batch]
        if self._on_batch is not None:
            self._on_batch(len(rows))
        results: list[list[Out] | BaseException] = []
        start = 0
        for chunk, _ in batch:
            results.append(outputs[start : start + len(chunk)])
            start += len(chunk)
        return results

    def _safe(self, rows: list[Row]) -> list[Out] | BaseException:
        try:
            out = self._run(rows)
        except Exception as exc:
            return exc
        if self._on_batch is not None:
            self._on_batch(len(rows))
        return out

    @staticmethod
    def _deliver(
        batch: list[tuple[list[Row], asyncio.Future[list[Out]]]], results: list[list[Out] | BaseException]
    ) -> None:
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    def close(self) -> None:
        for executor in (self._executor, self._large):
            if executor is not None:
                executor.shutdown(wait=False, cancel_futures=True)
