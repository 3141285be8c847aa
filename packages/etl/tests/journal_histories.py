"""Hypothesis strategies for multi-day source histories of a journal: changes, deletes, returns, A->B->A
flips, several rows per key in a batch, late rows, rows failing validation, null keys, duplicate times,
empty batches."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from .journal_reference import Row

SCALE = max(1, int(os.environ.get("THIMBLE_JOURNAL_SCALE", "1")))
"""``THIMBLE_JOURNAL_SCALE=N`` runs N times the examples, with more keys, days and rows per day."""

START = datetime(2026, 1, 1)


def _key_pool(keys: int) -> list[str | None]:
    # A null key once in about 40 rows: rare enough to leave most runs free to close keys.
    names: list[str | None] = [f"k{i}" for i in range(keys)]
    return [*names * max(1, 40 // keys), None]


@st.composite
def histories(draw: Any, days: int = 4, keys: int = 6, rows_per_day: int = 12) -> list[list[Row]]:
    """``days`` daily batches; each row's time is on its day, or on an earlier day (a late row)."""
    days, keys, rows_per_day = days * SCALE, keys * SCALE, rows_per_day * SCALE
    history = []
    for day in range(draw(st.integers(1, days))):
        row = st.builds(
            lambda key, value, back, hour, valid, day=day: Row(
                key, value, START + timedelta(days=day - back, hours=hour), valid
            ),
            st.sampled_from(_key_pool(keys)),
            st.sampled_from(["A", "B"]),
            st.sampled_from([0, 0, 0, 0, 1, 2]),
            st.integers(0, 1),
            st.sampled_from([True, True, True, True, False]),
        )
        history.append(draw(st.lists(row, max_size=rows_per_day)))
    return history


@st.composite
def snapshots(draw: Any, days: int = 4, keys: int = 8) -> list[list[Row]]:
    """``days`` daily snapshots for a journal without ``order_by``: mostly distinct keys, and now and then
    a duplicated key, a null key, a row failing validation or an empty snapshot."""
    days, keys = days * SCALE, keys * SCALE
    names = [f"k{i}" for i in range(keys)]
    row = st.builds(
        lambda key, value, valid: Row(key, value, START, valid),
        st.sampled_from(names),
        st.sampled_from(["A", "B"]),
        st.sampled_from([True, True, True, True, True, False]),
    )
    odd = st.builds(
        lambda key, value: Row(key, value, START),
        st.sampled_from([*names, None]),
        st.sampled_from(["A", "B"]),
    )
    return [
        draw(st.lists(row, max_size=keys, unique_by=lambda r: r.key)) + draw(st.lists(odd, max_size=1))
        for _ in range(draw(st.integers(1, days)))
    ]


def source_rows(batch: list[Row]) -> list[dict[str, Any]]:
    """The batch as JSON source rows: a row failing validation has a negative score."""
    return [
        {"id": r.key, "segment": r.value, "score": 1.0 if r.valid else -1.0, "at": r.at.isoformat()}
        for r in batch
    ]


def _at(day: int, hour: int = 0) -> datetime:
    return START + timedelta(days=day, hours=hour)


WORKED_HISTORY = [
    [Row("a", "A", _at(0)), Row("b", "A", _at(0)), Row("c", "A", _at(0)), Row("d", "A", _at(0))],
    # a flips; b is deleted; c fails validation (kept); d twice at one time with different values.
    [Row("a", "B", _at(1)), Row("a", "A", _at(1, 1)), Row("c", "B", _at(1), valid=False),
     Row("d", "B", _at(1)), Row("d", "A", _at(1))],
    # b comes back, with a late row from before its deletion; a null key: nothing is closed.
    [Row("a", "A", _at(1, 1)), Row("b", "B", _at(2)), Row("b", "B", _at(0, 1)), Row(None, "A", _at(2))],
    [],  # an empty snapshot has no batch time: it closes nothing
    # b, c and d are gone: closed at the batch time (75% of the open keys; max_close_share: 1.0).
    [Row("a", "A", _at(4)), Row("a", "A", _at(4)), Row("e", "A", _at(3))],
]  # fmt: skip
"""Every kind of event at least once, loaded before the random histories."""
