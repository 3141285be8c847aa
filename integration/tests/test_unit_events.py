"""The synthetic event generator: deterministic, realistic, skewed, with the promised share of bad events."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from pydantic import TypeAdapter, ValidationError
from typer.testing import CliRunner

from integration.flow.errors import FlowError
from integration.flow.events import EVENT_TYPES, ClientEvent
from integration.flow.generator import GeneratorConfig, cli, generate, profile

pytestmark = pytest.mark.unit

DAY = date(2026, 3, 14)
EVENTS: TypeAdapter[object] = TypeAdapter(ClientEvent)


@pytest.fixture(scope="module")
def day_events() -> list:
    return generate(GeneratorConfig(count=20_000, clients=1_000, day=DAY, seed=11))


def test_same_seed_and_day_give_the_same_bytes() -> None:
    config = GeneratorConfig(count=500, day=DAY, seed=3)
    assert [e.value for e in generate(config)] == [e.value for e in generate(config)]


def test_another_seed_or_day_gives_other_events() -> None:
    base = [e.value for e in generate(GeneratorConfig(count=200, day=DAY, seed=3))]
    assert base != [e.value for e in generate(GeneratorConfig(count=200, day=DAY, seed=4))]
    next_day = generate(GeneratorConfig(count=200, day=DAY + timedelta(days=1), seed=3))
    assert {e.value for e in next_day}.isdisjoint(base)


def test_events_lie_in_their_day_in_time_order(day_events: list) -> None:
    times = [e.event_time for e in day_events]
    assert times == sorted(times)
    start = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC)
    assert start <= times[0]
    assert times[-1] < start + timedelta(days=1)
    by_hour = Counter(t.hour for t in times)
    assert by_hour[20] > 3 * by_hour[3], "evenings are busier than nights"


def test_valid_events_match_the_schema_and_bad_ones_do_not(day_events: list) -> None:
    for event in day_events:
        if event.kind == "valid":
            parsed = EVENTS.validate_json(event.value)
            assert parsed.client_id == event.key  # type: ignore[attr-defined]
        else:
            with pytest.raises(ValidationError):
                EVENTS.validate_json(event.value)
            assert event.problem


def test_about_half_a_percent_are_bad_split_between_malformed_and_invalid(day_events: list) -> None:
    kinds = Counter(e.kind for e in day_events)
    bad = kinds["malformed"] + kinds["invalid"]
    assert 0.003 * len(day_events) <= bad <= 0.007 * len(day_events)
    assert kinds["malformed"] > 0
    assert kinds["invalid"] > 0
    for event in day_events:
        if event.kind == "malformed":
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(event.value)


def test_no_bad_events_when_the_ratio_is_zero() -> None:
    events = generate(GeneratorConfig(count=2_000, day=DAY, bad_ratio=0.0))
    assert {e.kind for e in events} == {"valid"}


def test_client_activity_is_skewed(day_events: list) -> None:
    per_client = Counter(e.key for e in day_events)
    top_tenth = sum(n for _, n in per_client.most_common(len(per_client) // 10))
    assert top_tenth > 0.4 * len(day_events)
    assert min(per_client.values()) < 5


def test_every_event_type_occurs_and_visits_dominate(day_events: list) -> None:
    types = Counter(e.event_type for e in day_events)
    assert set(types) == set(EVENT_TYPES)
    assert types["visit"] > types["order"] > types["return"]
    assert types["order"] > types["rating"]


def test_returns_and_ratings_refer_to_earlier_orders_of_the_same_client(day_events: list) -> None:
    ordered: dict[str, set[str]] = {}
    for event in day_events:
        if event.kind != "valid":
            continue
        value = orjson.loads(event.value)
        if value["event_type"] == "order":
            ordered.setdefault(value["client_id"], set()).add(value["order_id"])
        elif value["event_type"] in ("return", "rating"):
            assert value["order_id"] in ordered.get(value["client_id"], set())


def test_event_ids_are_unique_across_days() -> None:
    ids = []
    for offset in range(2):
        config = GeneratorConfig(count=300, day=DAY + timedelta(days=offset), bad_ratio=0.0)
        ids += [orjson.loads(e.value)["event_id"] for e in generate(config)]
    assert len(ids) == len(set(ids))


def test_client_traits_are_stable_and_returners_rate_lower() -> None:
    assert profile(7, 42) == profile(7, 42)
    profiles = [profile(7, i) for i in range(1, 2_000)]
    returners = [p.satisfaction for p in profiles if p.return_propensity > 0.25]
    keepers = [p.satisfaction for p in profiles if p.return_propensity < 0.1]
    assert sum(returners) / len(returners) < sum(keepers) / len(keepers) - 0.5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"count": 0}, "count must be at least 1"),
        ({"clients": 0}, "clients must be at least 1"),
        ({"bad_ratio": 1.5}, "bad_ratio must be between 0 and 1"),
    ],
)
def test_bad_settings_are_refused_with_a_clear_message(kwargs: dict, message: str) -> None:
    with pytest.raises(FlowError, match=message):
        GeneratorConfig(**kwargs)


def test_cli_writes_json_lines(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    result = CliRunner().invoke(cli, ["--count", "50", "--day", "2026-03-14", "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert len(lines) == 50
    assert all(line["key"].startswith("c") for line in lines)


def test_cli_refuses_a_bad_day_without_a_traceback() -> None:
    result = CliRunner().invoke(cli, ["--count", "5", "--day", "14/03/2026"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output


# -- the example consumers' logic ------------------------------------------------------------------------


def _event(kind: str, minute: int, **fields: object) -> object:
    payload = {
        "event_id": f"e-{minute}", "client_id": "c00001", "event_type": kind,
        "event_time": f"2026-03-14T10:{minute:02d}:00Z", **fields,
    }  # fmt: skip
    return EVENTS.validate_python(payload)


def test_features_count_spend_returns_and_ratings() -> None:
    from integration.flow.features import update

    features = None
    for event in (
        _event("visit", 1, page="home", duration_s=5.0, channel="app"),
        _event("order", 2, order_id="o1", amount=100.0, items=2),
        _event("order", 3, order_id="o2", amount=50.0, items=1),
        _event("return", 4, order_id="o1", amount=30.0),
        _event("rating", 5, order_id="o2", stars=4),
        _event("rating", 6, order_id="o1", stars=1),
    ):
        features = update(event, features)  # type: ignore[arg-type]
    assert features is not None
    assert (features.visits, features.orders, features.returns, features.ratings) == (1, 2, 1, 2)
    assert features.total_spent == 150.0
    assert features.avg_order_value == 75.0
    assert features.return_rate == pytest.approx(0.2)
    assert features.avg_rating == 2.5
    assert features.last_channel == "app"
    assert features.event_time == datetime(2026, 3, 14, 10, 6, tzinfo=UTC)


def test_snapshots_of_a_client_are_strictly_ordered_even_for_late_or_simultaneous_events() -> None:
    from integration.flow.events import names
    from integration.flow.features import app
    from thimble.consumer import TestClient

    with TestClient(app) as t:
        for event in (
            _event("visit", 30, page="home", duration_s=1.0, channel="web"),
            _event("visit", 10, page="cart", duration_s=1.0, channel="ads"),  # late
            _event("visit", 10, page="cart", duration_s=1.0, channel="ads"),  # at the same time
            _event("order", 45, order_id="o1", amount=5.0, items=1),
        ):
            t.send(names.events_topic, event, key="c00001")
        snapshots = t.outputs(names.features_topic)
    assert [f["visits"] for f in snapshots] == [1, 2, 3, 3]
    assert [f["event_time"] for f in snapshots] == [
        "2026-03-14T10:30:00Z",
        "2026-03-14T10:30:00.001000Z",
        "2026-03-14T10:30:00.002000Z",
        "2026-03-14T10:45:00Z",
    ]


def test_ab_arms_are_deterministic_and_follow_the_split() -> None:
    from integration.flow.ab_test import arm_of, parse_split

    arms = parse_split("control=90,treatment=10")
    assert arms == [("control", 0.9), ("treatment", 0.1)]
    clients = [f"c{i:05d}" for i in range(20_000)]
    first = [arm_of(c, "exp", arms) for c in clients]
    assert first == [arm_of(c, "exp", arms) for c in clients]
    share = first.count("treatment") / len(first)
    assert 0.09 < share < 0.11
    other = [arm_of(c, "another-exp", arms) for c in clients]
    assert other != first, "each experiment buckets clients independently"


@pytest.mark.parametrize("split", ["control", "control=x", "a=1,a=2", "a=0,b=0", "=5"])
def test_a_bad_ab_split_is_refused_with_the_expected_form(split: str) -> None:
    from integration.flow.ab_test import parse_split

    with pytest.raises(ValueError, match="A/B split"):
        parse_split(split)
