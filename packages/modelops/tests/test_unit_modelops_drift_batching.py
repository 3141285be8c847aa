from __future__ import annotations

import asyncio

import numpy as np
import pytest

from thimble.modelops import _drift
from thimble.modelops.batching import MicroBatcher

pytestmark = pytest.mark.unit


def test_psi_is_small_for_the_same_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(0)
    base = _drift.baseline(rng.normal(0, 1, 5000))
    assert base is not None
    assert len(base.edges) == 9
    same = _drift.psi(base, rng.normal(0, 1, 5000))
    shifted = _drift.psi(base, rng.normal(1.5, 1, 5000))
    assert same is not None
    assert same < 0.05
    assert shifted is not None
    assert shifted > 0.25
    assert _drift.psi(base, []) is None
    assert _drift.baseline([float("nan")]) is None


def test_concurrent_requests_run_as_one_batch() -> None:
    calls: list[int] = []

    def run(rows: list[int]) -> list[int]:
        calls.append(len(rows))
        return [r * 10 for r in rows]

    async def main() -> list[list[int]]:
        batcher: MicroBatcher[int, int] = MicroBatcher(run, max_batch_size=64)
        return await asyncio.gather(*(batcher.submit([i, i + 1]) for i in range(0, 20, 2)))

    results = asyncio.run(main())
    assert results == [[i * 10, (i + 1) * 10] for i in range(0, 20, 2)]
    assert calls == [20]


def test_batches_respect_max_size_and_wait() -> None:
    calls: list[int] = []

    def run(rows: list[int]) -> list[int]:
        calls.append(len(rows))
        return rows

    async def main() -> None:
        batcher: MicroBatcher[int, int] = MicroBatcher(run, max_batch_size=4, max_wait_ms=5)
        first = asyncio.ensure_future(batcher.submit([1]))
        await asyncio.sleep(0)
        rest = [asyncio.ensure_future(batcher.submit([i])) for i in range(9)]
        await asyncio.gather(first, *rest)

    asyncio.run(main())
    assert sum(calls) == 10
    assert max(calls) <= 4


def test_a_failing_request_does_not_fail_its_batch_neighbours() -> None:
    def run(rows: list[int]) -> list[int]:
        if any(r < 0 for r in rows):
            raise ValueError("negative")
        return rows

    async def main() -> list[object]:
        batcher: MicroBatcher[int, int] = MicroBatcher(run, in_thread=True)
        try:
            return await asyncio.gather(
                batcher.submit([1]), batcher.submit([-1]), batcher.submit([2]), return_exceptions=True
            )
        finally:
            batcher.close()

    ok1, bad, ok2 = asyncio.run(main())
    assert ok1 == [1]
    assert ok2 == [2]
    assert isinstance(bad, ValueError)


def test_a_cancelled_first_request_never_strands_those_who_joined_its_batch() -> None:
    calls: list[list[int]] = []

    def run(rows: list[int]) -> list[int]:
        calls.append(rows)
        return [r * 10 for r in rows]

    async def main() -> tuple[list[list[int]], list[int]]:
        batcher: MicroBatcher[int, int] = MicroBatcher(run, max_batch_size=64)
        first = asyncio.ensure_future(batcher.submit([1]))
        joined = [asyncio.ensure_future(batcher.submit([i])) for i in (2, 3)]
        await asyncio.sleep(0)  # all three are waiting: the first for its batch, the others in it
        first.cancel()
        got = await asyncio.wait_for(asyncio.gather(*joined), timeout=5)
        assert first.cancelled()
        return got, await batcher.submit([4])

    joined, after = asyncio.run(main())
    assert joined == [[20], [30]]
    assert after == [40]
    assert calls == [[2, 3], [4]]
