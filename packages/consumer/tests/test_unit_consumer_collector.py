"""The collector while consuming: a batch's objects die by reference counting, not in collections."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from pydantic import BaseModel

from thimble.consumer import _collector
from thimble.consumer._collector import tuned_for

pytestmark = pytest.mark.unit


class Event(BaseModel):
    client_id: int
    tags: list[str]


class Features(BaseModel):
    client_id: int
    tag_count: int


@pytest.fixture(autouse=True)
def default_collector(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Python's default collector, and no runner consuming (one left running by another test would be)."""
    monkeypatch.setattr(_collector, "_consuming", [])
    threshold, frozen = gc.get_threshold(), gc.get_freeze_count()
    gc.set_threshold(700, 10, 10)
    gc.unfreeze()
    yield
    gc.set_threshold(*threshold)
    if frozen:
        gc.freeze()


@pytest.fixture
def collections() -> Iterator[list[int]]:
    """The generation of every collection started while the test runs."""
    started: list[int] = []

    def note(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started.append(info["generation"])

    gc.callbacks.append(note)
    try:
        yield started
    finally:
        gc.callbacks.remove(note)


def handle_batch(size: int) -> list[bytes]:
    """What a batch handler's batch holds at once: the decoded models, their outputs, the lists."""
    events = [Event.model_validate({"client_id": i, "tags": ["a", "b"]}) for i in range(size)]
    outputs = [Features(client_id=e.client_id, tag_count=len(e.tags)) for e in events]
    return [o.model_dump_json().encode() for o in outputs]


def test_a_batch_of_the_largest_size_is_handled_without_a_collection(collections: list[int]) -> None:
    gc.collect()
    with tuned_for(500):
        collections.clear()
        for _ in range(5):
            handle_batch(500)
        assert collections == []
    collections.clear()
    handle_batch(500)
    assert collections, "with the default threshold the same batch starts collections"


def test_the_objects_alive_at_start_are_frozen_and_everything_is_undone_on_exit() -> None:
    threshold = gc.get_threshold()
    assert gc.get_freeze_count() == 0
    with tuned_for(500):
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == 500 * 20
        assert gc.get_threshold()[1:] == threshold[1:]
    assert gc.get_threshold() == threshold
    assert gc.get_freeze_count() == 0


def test_a_higher_threshold_and_an_earlier_freeze_are_kept() -> None:
    threshold = gc.get_threshold()
    gc.set_threshold(100_000, *threshold[1:])
    gc.freeze()
    try:
        with tuned_for(10):
            assert gc.get_threshold()[0] == 100_000
        assert gc.get_threshold()[0] == 100_000
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_two_runners_in_one_process_leave_it_as_they_found_it() -> None:
    threshold = gc.get_threshold()
    with tuned_for(100):
        with tuned_for(500):
            assert gc.get_threshold()[0] == 500 * 20
        assert gc.get_threshold()[0] == 500 * 20, "the other runner still consumes"
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == threshold
    assert gc.get_freeze_count() == 0
