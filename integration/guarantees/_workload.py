"""What the suite sends: valid events and poison of every kind, each record knowing what must become of it."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson

Headers = list[tuple[str, bytes | None]]

BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)
HANDLER_POISON_AMOUNT = 13.13  # a valid event the test app's handler refuses with an exception
HUGE_BYTES = 300_000
COUNTS_SUFFIX = "-counts"  # the stateful count's feature set: the scenario's feature set + this


@dataclass(frozen=True)
class Record:
    """One record to send: ``event_id`` for a valid event (None for poison), ``kind`` names the poison."""

    key: bytes | None
    value: bytes | None
    headers: Headers
    kind: str = "valid"
    event_id: int | None = None
    entity: int | None = None
    ts_ms: int | None = None

    @property
    def poison(self) -> bool:
        return self.event_id is None


def event(event_id: int, entity: int, ts_ms: int, amount: float) -> dict[str, object]:
    ts = (BASE_TIME + timedelta(milliseconds=ts_ms)).isoformat().replace("+00:00", "Z")
    return {"id": event_id, "entity": entity, "amount": amount, "ts": ts}


def _json(value: object) -> bytes:
    return orjson.dumps(value)


def _valid_amount(rng: random.Random) -> float:
    """A valid event's amount: never the one the handler refuses (1 in 100,000 draws would be)."""
    amount = round(rng.uniform(0, 1000), 2)
    return amount if amount != HANDLER_POISON_AMOUNT else amount + 0.01


def _valid_body(rng: random.Random) -> dict[str, object]:
    return event(rng.randrange(10**9, 2 * 10**9), rng.randrange(1000), rng.randrange(10**6), 1.0)


def _bad_headers() -> Headers:
    return [
        ("trace", b"\xff\xfe\x00binary"),
        ("trace", b"a second value under the same name"),
        ("", b"empty name"),
        ("\u00e9t\u00e9", "\u00e9t\u00e9".encode()),
        ("empty", b""),
        ("big", b"h" * 8000),
    ]


def _poison_makers(per_message: bool) -> dict[str, Callable[[random.Random], tuple[bytes | None, Headers]]]:
    """Each kind of poison: a value (and headers) that no handler may ever see as an event."""

    def with_body(
        change: Callable[[dict[str, object]], object],
    ) -> Callable[[random.Random], tuple[bytes, Headers]]:
        return lambda rng: (_json(change(_valid_body(rng))), [])

    makers: dict[str, Callable[[random.Random], tuple[bytes | None, Headers]]] = {
        "invalid_json": lambda rng: (b'{"id": 1, "entity": ', []),
        "wrong_type": with_body(lambda body: {**body, "id": "not a number"}),
        "missing_field": with_body(lambda body: {k: v for k, v in body.items() if k != "entity"}),
        "out_of_range": with_body(lambda body: {**body, "amount": -5.0}),
        "bad_encoding": lambda rng: ('{"id": 1, "note": "d\u00e9j\u00e0"}'.encode("latin-1"), []),
        "not_an_object": lambda rng: (b"[1, 2, 3]", []),
        "json_null": lambda rng: (b"null", []),
        "empty": lambda rng: (b"", []),
        "tombstone": lambda rng: (None, []),
        "huge": lambda rng: (b'{"id": 7, "pad": "' + b"x" * HUGE_BYTES, []),
        "bad_headers": lambda rng: (_json({**_valid_body(rng), "entity": None}), _bad_headers()),
    }
    if per_message:
        # A batch handler that raises dead-letters its whole batch, so only per-message handlers get this one.
        makers["handler_error"] = lambda rng: (
            _json(event(rng.randrange(10**9, 2 * 10**9), rng.randrange(1000), 0, HANDLER_POISON_AMOUNT)),
            [],
        )
    return makers


def poison_kinds(per_message: bool) -> list[str]:
    return sorted(_poison_makers(per_message))


@dataclass
class Workload:
    """``count`` records over ``entities`` keys, about ``poison_rate`` of them poison, every kind at least once.

    Valid event ``i`` has id ``i``, entity ``i % entities`` and an event time that is a permutation of
    ``0..count`` milliseconds, so arrival order and event-time order differ within an entity.
    """

    count: int
    seed: int
    per_message: bool = True
    poison_rate: float = 0.01
    entities: int = 0
    records: list[Record] = field(default_factory=list)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        self.entities = self.entities or max(10, self.count // 20)
        makers = _poison_makers(self.per_message)
        kinds = sorted(makers)
        poison_count = max(len(kinds), round(self.count * self.poison_rate))
        poison_at = set(rng.sample(range(self.count), poison_count))
        order = list(range(self.count))
        rng.shuffle(order)
        poison_seen = 0
        for i in range(self.count):
            entity = i % self.entities
            key = str(entity).encode()
            if i in poison_at:
                kind = kinds[poison_seen % len(kinds)]
                poison_seen += 1
                value, extra = makers[kind](rng)
                self.records.append(Record(key, value, [("kind", kind.encode()), *extra], kind))
                continue
            body = event(i, entity, order[i], _valid_amount(rng))
            trace: Headers = [("trace", f"t-{i}".encode())]
            self.records.append(Record(key, _json(body), trace, "valid", i, entity, order[i]))

    @property
    def valid_ids(self) -> set[int]:
        return {r.event_id for r in self.records if r.event_id is not None}

    @property
    def poison(self) -> list[Record]:
        return [r for r in self.records if r.poison]

    def counts_by_entity(self, copies: Counter[int] | None = None) -> dict[int, tuple[int, int]]:
        """For each entity, how many valid events it has and the sum of their ids (what a stateful count
        of the valid events must hold: one event counted twice or missed changes both); an event the
        topic holds ``copies[id]`` times counts that often."""
        counts: dict[int, tuple[int, int]] = {}
        for r in self.records:
            if r.event_id is not None and r.entity is not None:
                times = 1 if copies is None else max(1, copies[r.event_id])
                n, ids = counts.get(r.entity, (0, 0))
                counts[r.entity] = (n + times, ids + times * r.event_id)
        return counts

    def latest_by_entity(self) -> dict[int, tuple[int, int]]:
        """For each entity, ``(event id, event time ms)`` of its valid event with the latest event time."""
        latest: dict[int, tuple[int, int]] = {}
        for r in self.records:
            if r.event_id is None or r.entity is None or r.ts_ms is None:
                continue
            if r.entity not in latest or r.ts_ms > latest[r.entity][1]:
                latest[r.entity] = (r.event_id, r.ts_ms)
        return latest
