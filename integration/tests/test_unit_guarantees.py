"""The guarantee suite's own parts, without brokers: the workload, the audits, the scenario catalog."""

from __future__ import annotations

import itertools

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from integration.guarantees import _catalog
from integration.guarantees._audit import (
    Read,
    audit_dead_letters,
    compare_counts,
    count_ids,
    sent_records,
)
from integration.guarantees._scenario import worker_exits
from integration.guarantees._workload import HANDLER_POISON_AMOUNT, Record, Workload, poison_kinds

pytestmark = pytest.mark.unit


def test_about_one_percent_poison_of_every_kind() -> None:
    workload = Workload(2000, seed=3)
    kinds = {r.kind for r in workload.poison}
    assert kinds == set(poison_kinds(per_message=True))
    assert 18 <= len(workload.poison) <= 22
    assert len(workload.valid_ids) + len(workload.poison) == 2000
    tombstone = next(r for r in workload.poison if r.kind == "tombstone")
    assert tombstone.value is None


def test_batch_workloads_have_no_handler_poison() -> None:
    assert "handler_error" not in {r.kind for r in Workload(500, seed=1, per_message=False).poison}


def test_no_valid_event_carries_the_amount_the_handler_refuses() -> None:
    # Seed 14 drew it once among 2,000 records: a valid event dead-lettered, counted as lost.
    for seed in (14, *range(5)):
        amounts = [
            orjson.loads(r.value or b"")["amount"]
            for r in Workload(2000, seed=seed).records
            if r.event_id is not None
        ]
        assert HANDLER_POISON_AMOUNT not in amounts


def test_workload_is_reproducible_from_its_seed() -> None:
    assert Workload(300, seed=5).records == Workload(300, seed=5).records
    assert Workload(300, seed=5).records != Workload(300, seed=6).records


def test_valid_records_decode_to_their_event() -> None:
    for record in Workload(200, seed=2).records:
        if record.event_id is not None:
            body = orjson.loads(record.value or b"")
            assert (body["id"], body["entity"]) == (record.event_id, record.entity)


@settings(max_examples=30, deadline=None)
@given(count=st.integers(20, 400), seed=st.integers(0, 1000))
def test_latest_by_entity_is_the_latest_event_time(count: int, seed: int) -> None:
    workload = Workload(count, seed)
    reference: dict[int, list[tuple[int, int]]] = {}
    for r in workload.records:
        if r.event_id is not None and r.entity is not None and r.ts_ms is not None:
            reference.setdefault(r.entity, []).append((r.ts_ms, r.event_id))
    assert workload.latest_by_entity() == {
        entity: (max(events)[1], max(events)[0]) for entity, events in reference.items()
    }


def _dead_letter(record: Record, partition: int, offset: int, **changes: object) -> Read:
    headers = [
        *record.headers,
        ("thimble.original.topic", b"src"),
        ("thimble.original.partition", str(partition).encode()),
        ("thimble.original.offset", str(offset).encode()),
        ("thimble.original.timestamp", b"1"),
        ("thimble.error.class", b"ValidationError"),
        ("thimble.error.stage", b"validate"),
    ]
    return Read(
        changes.get("key", record.key),  # type: ignore[arg-type]
        changes.get("value", record.value),  # type: ignore[arg-type]
        changes.get("headers", headers),  # type: ignore[arg-type]
    )


def test_dead_letter_audit_accepts_exactly_the_poison() -> None:
    poison = {(0, 5): Record(b"k", b"{bad", [("kind", b"invalid_json")], "invalid_json")}
    counts = audit_dead_letters(poison, [_dead_letter(poison[0, 5], 0, 5)], "src")
    assert (counts.lost, counts.unexpected, counts.wrong, counts.duplicated) == (0, 0, 0, 0)


def test_dead_letter_audit_finds_lost_extra_changed_and_repeated_letters() -> None:
    tombstone = Record(b"k", None, [("kind", b"tombstone")], "tombstone")
    bad = Record(b"k2", b"", [("kind", b"empty"), ("bin", b"\xff")], "empty")
    lost = Record(b"k3", b"[1]", [], "not_an_object")
    poison = {(0, 1): tombstone, (1, 2): bad, (2, 3): lost}
    letters = [
        _dead_letter(tombstone, 0, 1, value=b""),  # a tombstone turned into an empty value
        _dead_letter(
            bad,
            1,
            2,
            headers=[
                ("kind", b"empty"),
                ("thimble.original.partition", b"1"),
                ("thimble.original.offset", b"2"),
            ],
        ),
        _dead_letter(bad, 1, 2),
        _dead_letter(Record(b"v", b"{}", []), 0, 99),  # a valid record dead-lettered
    ]
    counts = audit_dead_letters(poison, letters, "src")
    assert counts.lost == 1
    assert counts.unexpected == 1
    assert counts.wrong == 2
    assert counts.duplicated == 1
    assert any("tombstone" in e and "b'' instead of null" in e for e in counts.examples)


def test_count_ids_tells_lost_from_duplicated_and_unexpected() -> None:
    counts = count_ids({1, 2, 3}, [1, 1, 2, 9], "topic")
    assert (counts.lost, counts.duplicated, counts.unexpected) == (1, 1, 1)


def test_a_record_the_input_holds_twice_is_expected_twice_and_only_twice() -> None:
    """The suite's idempotent producer can still write a record twice (an epoch bump after a broker
    restart): each copy is the consumer's to handle, once."""
    workload = Workload(200, seed=5)
    valid = next(r for r in workload.records if not r.poison)
    bad = next(r for r in workload.records if r.poison)
    held = [
        Read(r.key, r.value, r.headers, 0, offset) for offset, r in enumerate([*workload.records, valid, bad])
    ]
    source = sent_records(workload.records, held)
    assert source.again == 2
    assert valid.event_id is not None
    assert source.copies[valid.event_id] == 2
    assert (0, len(workload.records) + 1) in source.poison
    assert len(source.poison) == len(workload.poison) + 1

    outputs = [*sorted(workload.valid_ids), valid.event_id]
    assert count_ids(workload.valid_ids, outputs, "topic", source.copies).duplicated == 0
    assert count_ids(workload.valid_ids, [*outputs, valid.event_id], "topic", source.copies).duplicated == 1
    assert count_ids(workload.valid_ids, outputs, "topic").duplicated == 1
    counts = workload.counts_by_entity(source.copies)
    assert sum(n for n, _ in counts.values()) == len(workload.valid_ids) + 1


def test_the_ci_selection_covers_every_pair_of_mode_handler_and_protocol() -> None:
    scenarios = _catalog.ci_selection() + [_catalog.by_name(name) for name in _catalog.KNOWN_FAILING]
    for first, second in itertools.combinations(("mode", "handler", "protocol"), 2):
        covered = {(getattr(s, first), getattr(s, second)) for s in scenarios}
        assert len(covered) == 4, (first, second)
    assert any(s.slow for s in scenarios)
    assert any("kill_leader" in s.attacks for s in scenarios)


def test_every_scenario_has_its_own_name() -> None:
    names = [s.name for s in _catalog.ALL]
    assert len(set(names)) == len(names) == 8


def test_the_stateful_count_audit_finds_an_event_counted_twice_or_missed() -> None:
    workload = Workload(400, seed=4)
    expected = workload.counts_by_entity()
    assert sum(n for n, _ in expected.values()) == len(workload.valid_ids)
    assert sum(ids for _, ids in expected.values()) == sum(workload.valid_ids)

    def stored(change: dict[int, tuple[int, int] | None]) -> dict[int, list[bytes | None]]:
        values = {**expected, **change}
        return {
            e: [None, None] if v is None else [str(v[0]).encode(), str(v[1]).encode()]
            for e, v in values.items()
        }

    assert compare_counts(expected, stored({})).examples == []
    n, ids = expected[3]
    twice = compare_counts(expected, stored({3: (n + 1, ids + 7)}))
    assert (twice.duplicated, twice.lost, twice.wrong) == (1, 0, 1)
    assert "entity 3" in twice.examples[0]
    missing = compare_counts(expected, stored({5: None}))
    assert (missing.lost, missing.wrong) == (expected[5][0], 1)
    swapped = compare_counts(expected, stored({3: (n, ids + 1)}))  # one missed, another counted twice
    assert (swapped.lost, swapped.duplicated, swapped.wrong) == (0, 0, 1)


def _log(level: str, message: str, **fields: object) -> str:
    return orjson.dumps({"level": level, "message": message} | fields).decode()


def test_worker_exits_count_each_exit_once_under_the_failure_its_worker_logged() -> None:
    lines = [
        _log("warning", "revocation: ILLEGAL_GENERATION, the commit is retried", worker=0),
        _log("warning", "worker exited; restarting", worker=0, exit_code=-9),  # the suite's kill
        _log("error", "stopping: producer fenced", worker=1),
        _log("error", "commit failed: ILLEGAL_GENERATION", worker=0),
        "not a JSON line: ILLEGAL_GENERATION exit",
        _log("warning", "worker exited; restarting", worker=1, exit_code=1),
        _log("warning", "worker exited; restarting", worker=0, exit_code=0),
        _log("warning", "worker exited; restarting", worker=0, exit_code=1),
    ]
    assert worker_exits(lines) == {"producer fenced": 1, "exit": 1}
