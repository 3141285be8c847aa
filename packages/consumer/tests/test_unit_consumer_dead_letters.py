"""Dead letters keep the record as it was; exactly-once processes of one group get distinct slots."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from thimble.consumer import App, TestClient
from thimble.consumer._kafka import HostSlot

pytestmark = pytest.mark.unit


class Event(BaseModel):
    id: int


def test_a_tombstone_is_dead_lettered_as_a_tombstone() -> None:
    app = App("tombstones")

    @app.handler(source="events")
    def handle(event: Event) -> None:
        return None

    with TestClient(app) as t:
        t.send("events", None, key="7")
        t.send("events", b"", key="8")
        letters = t.dead_letters("events")
    assert [(d.key, d.value, d.error_stage) for d in letters] == [
        (b"7", None, "decode"),
        (b"8", b"", "decode"),
    ]


def test_live_processes_of_a_group_hold_distinct_slots_and_a_freed_slot_is_taken_again(
    tmp_path: Path,
) -> None:
    first, second = HostSlot("group/../x", tmp_path), HostSlot("group/../x", tmp_path)
    other_group = HostSlot("another", tmp_path)
    assert (first.number, second.number, other_group.number) == (0, 1, 0)
    first.release()  # what the kernel does when a process dies, even by kill -9
    again = HostSlot("group/../x", tmp_path)
    assert again.number == 0
    assert all(p.parent == tmp_path for p in tmp_path.iterdir())  # the group id never makes a path
    for slot in (second, other_group, again):
        slot.release()


def test_a_header_with_a_null_value_stays_null_in_the_dead_letter() -> None:
    app = App("null-headers")

    @app.handler(source="events")
    def handle(event: Event) -> None:
        raise ValueError("refused")

    with TestClient(app) as t:
        t.send("events", {"id": 1}, headers={"trace": None, "tenant": "a"})
        (letter,) = t.dead_letters("events")
    assert letter.headers["trace"] is None
    assert letter.headers["tenant"] == b"a"
