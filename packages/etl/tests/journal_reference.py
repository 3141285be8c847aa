"""A plain-Python SCD2 journal with the rules of ``thimble.etl.journal``, written to be obviously right.

One ``Row`` per source row: a key (None: unknown), the tracked value, its change time and whether it
passes validation. ``Journal.load`` applies one batch (a full snapshot) and returns what it did.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise

from thimble.etl.journal import CONFLICT_RULE, LATE_RULE

NULL_KEY_RULE = "keys are not null"
UNIQUE_KEY_RULE = "keys are unique in the batch"
INVALID_RULE = "range(score)"


@dataclass(frozen=True)
class Row:
    key: str | None
    value: str
    at: datetime
    valid: bool = True


@dataclass
class Version:
    key: str
    value: str
    start: datetime
    end: datetime | None = None  # None: the current version

    def covers(self, at: datetime) -> bool:
        return self.start <= at and (self.end is None or at < self.end)


@dataclass
class Outcome:
    inserted: int = 0
    updated: int = 0
    closed: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)


@dataclass
class Journal:
    versions: list[Version] = field(default_factory=list)
    deletions: set[tuple[str, datetime]] = field(default_factory=set)
    """(key, time) of every real deletion: the only places a key's history may have a gap."""

    def current(self) -> dict[str, Version]:
        return {v.key: v for v in self.versions if v.end is None}

    def rows(self) -> list[tuple[str, str, datetime, datetime | None, bool]]:
        """(key, value, valid_from, valid_to, is_current), sorted like the table's rows."""
        return sorted(((v.key, v.value, v.start, v.end, v.end is None) for v in self.versions), key=_order)

    def load(self, batch: list[Row]) -> Outcome:
        out = Outcome()
        before = [Version(v.key, v.value, v.start, v.end) for v in self.versions]
        current = self.current()
        good: list[Row] = []
        for row in batch:
            if row.key is None:
                out.quarantined[NULL_KEY_RULE] += 1
            elif not row.valid:
                out.quarantined[INVALID_RULE] += 1
            else:
                good.append(row)

        for key in sorted({row.key for row in good if row.key is not None}):
            rows = [row for row in good if row.key == key]
            values_at: dict[datetime, set[str]] = {}
            for row in rows:
                values_at.setdefault(row.at, set()).add(row.value)
            ordered: list[Row] = []
            for row in rows:
                if len(values_at[row.at]) > 1:
                    out.quarantined[CONFLICT_RULE] += 1
                else:
                    ordered.append(row)
            cur = current.get(key)
            # The key's last time: its current version's start, or when it was deleted.
            ends = [v.end for v in before if v.key == key and v.end is not None]
            last_time = cur.start if cur is not None else max(ends, default=None)
            later = sorted((r for r in ordered if last_time is None or r.at > last_time), key=lambda r: r.at)
            for row in ordered:
                if last_time is not None and row.at <= last_time:
                    loaded = any(v.key == key and v.value == row.value and v.covers(row.at) for v in before)
                    if not loaded:
                        out.quarantined[LATE_RULE] += 1
            last = cur.value if cur is not None else None
            opened: list[Version] = []
            for row in later:
                if row.value != last:
                    opened.append(Version(key, row.value, row.at))
                    last = row.value
            for this, following in pairwise(opened):
                this.end = following.start
            if opened:
                if cur is None:
                    out.inserted += 1
                    out.updated += len(opened) - 1
                else:
                    cur.end = opened[0].start
                    out.updated += len(opened)
            self.versions += opened

        # Deletes: keys absent from the snapshot (bad rows count as present), closed at the batch time.
        unknown = any(row.key is None for row in batch)
        present = {row.key for row in batch}
        batch_time = max((row.at for row in good), default=None)
        if not unknown and batch_time is not None:
            for key, cur in current.items():
                if key not in present and batch_time > cur.start:
                    cur.end = batch_time
                    self.deletions.add((key, batch_time))
                    out.closed += 1
        return out

    def load_unordered(self, batch: list[Row], at: datetime) -> Outcome:
        """A batch without ``order_by``, run at ``at``: every version it opens starts then, and a key must be
        unique in it. Each quarantined row counts once, under its failed rules joined by " & "."""
        out = Outcome()
        current = self.current()
        seen = Counter(row.key for row in batch)
        good: list[Row] = []
        for row in batch:
            rules = [] if row.valid else [INVALID_RULE]
            if row.key is None:
                rules.append(NULL_KEY_RULE)
            if seen[row.key] > 1:  # null keys are one group, like any other
                rules.append(UNIQUE_KEY_RULE)
            if rules:
                out.quarantined[" & ".join(rules)] += 1
            else:
                good.append(row)
        for row in good:
            assert row.key is not None
            cur = current.get(row.key)
            if cur is None:
                out.inserted += 1
            elif cur.value != row.value:
                cur.end = at
                out.updated += 1
            else:
                continue
            self.versions.append(Version(row.key, row.value, at))
        # Deletes: keys absent from the snapshot (bad rows count as present), closed at the run's time.
        if not any(row.key is None for row in batch):
            present = {row.key for row in batch}
            for key, cur in current.items():
                if key not in present and at > cur.start:
                    cur.end = at
                    self.deletions.add((key, at))
                    out.closed += 1
        return out


def check_invariants(
    rows: list[tuple[str, str, datetime, datetime | None, bool]], deletions: set[tuple[str, datetime]]
) -> None:
    """Structural rules every journal obeys, whatever its history: at most one open version per key, no
    empty or overlapping interval, and a key's versions follow each other except after a deletion."""
    by_key: dict[str, list[tuple[str, str, datetime, datetime | None, bool]]] = {}
    for row in sorted(rows, key=_order):
        by_key.setdefault(row[0], []).append(row)
    for key, versions in by_key.items():
        assert sum(1 for v in versions if v[4]) <= 1, f"{key}: several open versions"
        for v in versions:
            assert v[4] == (v[3] is None), f"{key}: is_current disagrees with valid_to"
            assert v[3] is None or v[2] < v[3], f"{key}: empty or negative interval {v}"
        for prev, nxt in pairwise(versions):
            assert prev[3] is not None, f"{key}: an open version before another"
            assert prev[3] <= nxt[2], f"{key}: overlapping versions {prev} {nxt}"
            assert prev[3] == nxt[2] or (key, prev[3]) in deletions, f"{key}: a gap with no deletion"
            if prev[3] == nxt[2] and (key, prev[3]) not in deletions:
                assert prev[1] != nxt[1], f"{key}: two contiguous versions with the same value"


def _order(row: tuple[str, str, datetime, datetime | None, bool]) -> tuple[str, datetime]:
    return row[0], row[2]
