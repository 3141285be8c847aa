"""The plain-Python reference journal: a worked example, and its invariants on random histories."""

from __future__ import annotations

from datetime import datetime

from hypothesis import given, settings

from thimble.etl.journal import CONFLICT_RULE, LATE_RULE

from .journal_histories import SCALE, histories
from .journal_reference import Journal, Row, check_invariants


def _at(day: int) -> datetime:
    return datetime(2026, 1, day)


def test_reference_on_a_worked_history() -> None:
    journal = Journal()
    first = journal.load([Row("a", "A", _at(1)), Row("b", "A", _at(1)), Row("a", "B", _at(2))])
    assert (first.inserted, first.updated, first.closed) == (2, 1, 0)
    # b deleted (closed at the batch time, day 3); a flips back; a late row and a conflict.
    second = journal.load(
        [Row("a", "A", _at(3)), Row("a", "B", _at(1)), Row("c", "A", _at(3)), Row("c", "B", _at(3))]
    )
    assert (second.inserted, second.updated, second.closed) == (0, 1, 1)
    assert dict(second.quarantined) == {LATE_RULE: 1, CONFLICT_RULE: 2}
    assert journal.rows() == [
        ("a", "A", _at(1), _at(2), False),
        ("a", "B", _at(2), _at(3), False),
        ("a", "A", _at(3), None, True),
        ("b", "A", _at(1), _at(3), False),
    ]
    # A bad row keeps its key; a null key stops every close.
    third = journal.load([Row("a", "B", _at(4), valid=False), Row(None, "A", _at(4))])
    assert (third.inserted, third.updated, third.closed) == (0, 0, 0)
    assert journal.current().keys() == {"a"}


@settings(max_examples=150 * SCALE, deadline=None)
@given(histories(days=6, keys=4, rows_per_day=8))
def test_reference_keeps_the_journal_invariants(history: list[list[Row]]) -> None:
    journal = Journal()
    for batch in history:
        first = journal.load(batch)
        check_invariants(journal.rows(), journal.deletions)
        rows = journal.rows()
        again = journal.load(batch)
        assert journal.rows() == rows
        assert (again.inserted, again.updated, again.closed) == (0, 0, 0)
        assert again.quarantined == first.quarantined
