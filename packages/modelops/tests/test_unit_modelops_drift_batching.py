from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import pytest

from thimble.modelops import _drift
from thimble.modelops.batching import SOLO_YIELDS, MicroBatcher

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


def test_one_request_at_a_time_stops_yielding_and_requests_together_are_batched_again() -> None:
    calls: list[int] = []

    def run(rows: list[int]) -> list[int]:
        calls.append(len(rows))
        return rows

    def runs_without_yielding(batcher: MicroBatcher[int, int], row: int) -> bool:
        step = batcher.submit([row])
        try:
            step.send(None)
        except StopIteration as done:
            answer = done.value
        else:
            step.close()
            return False
        assert answer == [row]
        return True

    async def main() -> list[bool]:
        batcher: MicroBatcher[int, int] = MicroBatcher(run, max_batch_size=64)
        assert not runs_without_yielding(batcher, 0)  # a fresh batcher yields for others to join
        for i in range(SOLO_YIELDS):
            assert await batcher.submit([i]) == [i]  # and no one does
        lone = [runs_without_yielding(batcher, i) for i in range(3 * SOLO_YIELDS)]
        calls.clear()
        for _ in range(SOLO_YIELDS + 2):  # three at a time: within SOLO_YIELDS rounds they meet again
            assert await asyncio.gather(*(batcher.submit([i]) for i in range(3))) == [[0], [1], [2]]
        return lone

    lone = asyncio.run(main())
    assert lone == [(i + 1) % SOLO_YIELDS != 0 for i in range(3 * SOLO_YIELDS)]
    first_batch = calls.index(3)
    assert first_batch < SOLO_YIELDS * 3
    assert calls[first_batch:] == [3] * (len(calls) - first_batch)


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


def _recording(calls: list[list[int]]) -> Callable[[list[int]], list[int]]:
    def run(rows: list[int]) -> list[int]:
        calls.append(rows)
        return [r * 10 for r in rows]

    return run


async def _approach_then_submit(
    batcher: MicroBatcher[int, int], arrive: asyncio.Event, row: int
) -> list[int]:
    with batcher.approaching():
        await arrive.wait()  # reading its features, say
    return await batcher.submit([row])


def test_a_batch_waits_for_callers_on_their_way_and_scores_them_together() -> None:
    calls: list[list[int]] = []

    async def main() -> list[list[int]]:
        batcher: MicroBatcher[int, int] = MicroBatcher(_recording(calls), hold_ms=60_000)
        arrive = asyncio.Event()
        late = asyncio.ensure_future(_approach_then_submit(batcher, arrive, 2))
        await asyncio.sleep(0)
        first = asyncio.ensure_future(batcher.submit([1]))
        for _ in range(5):  # the first caller is held, not run
            await asyncio.sleep(0)
        assert calls == []
        arrive.set()
        return await asyncio.wait_for(asyncio.gather(first, late), timeout=5)

    assert asyncio.run(main()) == [[10], [20]]
    assert calls == [[1, 2]]


@pytest.mark.parametrize("hold_ms", [0, 20])
def test_a_caller_that_never_arrives_holds_a_batch_no_longer_than_hold_ms(hold_ms: float) -> None:
    calls: list[list[int]] = []

    async def main() -> list[int]:
        batcher: MicroBatcher[int, int] = MicroBatcher(_recording(calls), hold_ms=hold_ms)
        never = asyncio.Event()
        stuck = asyncio.ensure_future(_approach_then_submit(batcher, never, 2))
        await asyncio.sleep(0)
        try:
            return await asyncio.wait_for(batcher.submit([1]), timeout=5)
        finally:
            stuck.cancel()

    assert asyncio.run(main()) == [10]
    assert calls == [[1]]


def test_a_caller_that_turns_back_or_a_full_batch_releases_the_hold_at_once() -> None:
    calls: list[list[int]] = []

    async def main() -> tuple[list[int], list[list[int]]]:
        batcher: MicroBatcher[int, int] = MicroBatcher(_recording(calls), max_batch_size=2, hold_ms=60_000)
        turn_back = asyncio.Event()

        async def rejected() -> None:  # its request fails validation: it never submits
            with batcher.approaching():
                await turn_back.wait()

        gone = asyncio.ensure_future(rejected())
        await asyncio.sleep(0)
        alone = asyncio.ensure_future(batcher.submit([1]))
        await asyncio.sleep(0)
        turn_back.set()
        first = await asyncio.wait_for(alone, timeout=5)
        await gone

        never = asyncio.Event()
        stuck = asyncio.ensure_future(_approach_then_submit(batcher, never, 9))
        await asyncio.sleep(0)
        leader = asyncio.ensure_future(batcher.submit([2]))
        await asyncio.sleep(0)  # held, waiting for the stuck caller
        filled = await asyncio.wait_for(asyncio.gather(leader, batcher.submit([3])), timeout=5)
        stuck.cancel()
        return first, filled

    first, filled = asyncio.run(main())
    assert first == [10]
    assert filled == [[20], [30]]
    assert calls == [[1], [2, 3]]
