"""Synthetic client events: realistic, skewed, deterministic, with a few bad ones; produced to Kafka.

    python -m integration.flow.generator --count 5000 --clients 500 --day 2026-11-26 --rate 2000

Clients follow a Zipf-like law (a few clients make most events). Each client has stable traits (how much
they spend, how often they return things, how happy they are), so features carry signal a model can learn.
Event times follow a daily rhythm over one UTC day; events are produced in event-time order, keyed by
client id. About ``bad_ratio`` of them are broken on purpose: half are not JSON, half violate the schema.
The same seed and day always give the same events; another day gives new ones (and new clients).
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import typer

from integration.flow.errors import FlowError
from integration.flow.events import EVENT_TYPES, names

Kind = Literal["valid", "malformed", "invalid"]

# Share of the day's events in each UTC hour: quiet nights, a lunch peak and an evening peak.
HOURLY_WEIGHTS = (1, 1, 1, 1, 1, 2, 3, 5, 6, 7, 8, 9, 10, 9, 8, 8, 8, 9, 10, 11, 12, 10, 6, 3)
PAGES = ("home", "search", "product", "cart", "checkout", "account", "help")
CHANNELS = ("web", "app", "email", "ads")
CHANNEL_WEIGHTS = (5, 4, 1, 1)


@dataclass(frozen=True)
class GeneratorConfig:
    """What to generate. ``skew`` is the Zipf exponent of client activity."""

    count: int = 5_000
    clients: int = 500
    day: date = field(default_factory=lambda: datetime.now(UTC).date())
    seed: int = 7
    skew: float = 1.1
    bad_ratio: float = 0.005

    def __post_init__(self) -> None:
        problems = []
        if self.count < 1:
            problems.append(f"count must be at least 1, got {self.count}")
        if self.clients < 1:
            problems.append(f"clients must be at least 1, got {self.clients}")
        if not 0 <= self.bad_ratio <= 1:
            problems.append(f"bad_ratio must be between 0 and 1, got {self.bad_ratio}")
        if self.skew < 0:
            problems.append(f"skew must be 0 or more, got {self.skew}")
        if problems:
            raise FlowError("invalid generator settings: " + "; ".join(problems))


@dataclass(frozen=True)
class SyntheticEvent:
    """One record to produce: its key (the client id), its bytes, and what it is meant to be."""

    key: str
    value: bytes
    kind: Kind
    event_type: str
    event_time: datetime
    problem: str = ""


@dataclass(frozen=True)
class ClientProfile:
    """Stable traits of one client: the same on every day."""

    client_id: str
    basket: float
    return_propensity: float
    satisfaction: float


def client_id(index: int) -> str:
    """``c00042``: the id of the client with this index."""
    return f"c{index:05d}"


def profile(seed: int, index: int) -> ClientProfile:
    """The traits of client ``index``: returners tend to spend more per order and rate lower."""
    rng = random.Random(f"{seed}:client:{index}")
    returns = min(0.6, rng.betavariate(1.2, 6.0))
    basket = round(math.exp(rng.gauss(3.6, 0.6)) * (1 + returns), 2)
    satisfaction = max(1.0, min(5.0, rng.gauss(4.5 - 4.0 * returns, 0.4)))
    return ClientProfile(client_id(index), basket, returns, satisfaction)


def _activity(config: GeneratorConfig) -> tuple[list[int], list[float]]:
    """Client indexes and cumulative Zipf weights; the ranking is a seeded shuffle, stable across days."""
    indexes = list(range(1, config.clients + 1))
    random.Random(f"{config.seed}:ranking").shuffle(indexes)
    cumulative, total = [], 0.0
    for rank in range(1, config.clients + 1):
        total += 1.0 / rank**config.skew
        cumulative.append(total)
    return indexes, cumulative


def _event_times(rng: random.Random, day: date, count: int) -> list[datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    hours = rng.choices(range(24), weights=HOURLY_WEIGHTS, k=count)
    return sorted(start + timedelta(hours=h, milliseconds=rng.randrange(3_600_000)) for h in hours)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class _Day:
    """The state of one generated day: each client's orders, so returns and ratings refer to real ones."""

    def __init__(self, config: GeneratorConfig) -> None:
        self.config = config
        self.rng = random.Random(f"{config.seed}:day:{config.day.isoformat()}")
        self.profiles: dict[int, ClientProfile] = {}
        self.orders: dict[str, list[tuple[str, float]]] = {}
        self.order_count = 0

    def profile(self, index: int) -> ClientProfile:
        found = self.profiles.get(index)
        if found is None:
            found = self.profiles[index] = profile(self.config.seed, index)
        return found

    def event(self, number: int, moment: datetime, client: ClientProfile) -> dict[str, Any]:
        rng = self.rng
        base = {
            "event_id": f"e{self.config.day:%Y%m%d}-{number:07d}",
            "client_id": client.client_id,
            "event_time": _iso(moment),
        }
        orders = self.orders.get(client.client_id, [])
        roll = rng.random()
        if orders and roll < 0.3 * client.return_propensity:
            order_id, amount = rng.choice(orders)
            share = rng.choice((1.0, 1.0, 0.5, 0.3))
            return {**base, "event_type": "return", "order_id": order_id, "amount": round(amount * share, 2)}
        if orders and roll < 0.15:
            order_id, _ = rng.choice(orders)
            stars = round(rng.gauss(client.satisfaction, 0.7))
            return {**base, "event_type": "rating", "order_id": order_id, "stars": max(1, min(5, stars))}
        if roll < 0.40:
            self.order_count += 1
            order_id = f"o{self.config.day:%Y%m%d}-{self.order_count:06d}"
            amount = round(max(1.0, rng.lognormvariate(math.log(client.basket), 0.5)), 2)
            self.orders.setdefault(client.client_id, []).append((order_id, amount))
            items = max(1, min(50, round(rng.expovariate(1 / 2.5))))
            return {**base, "event_type": "order", "order_id": order_id, "amount": amount, "items": items}
        page = rng.choice(PAGES)
        channel = rng.choices(CHANNELS, weights=CHANNEL_WEIGHTS)[0]
        duration = round(rng.expovariate(1 / 90.0), 1)
        return {**base, "event_type": "visit", "page": page, "duration_s": duration, "channel": channel}


def _malformed(rng: random.Random, payload: bytes) -> tuple[bytes, str]:
    """Bytes that are not a JSON object."""
    choice = rng.randrange(3)
    if choice == 0:
        return payload[: max(1, len(payload) // 2)], "truncated JSON"
    if choice == 1:
        return payload.replace(b'"', b"'", 4), "single-quoted JSON"
    return b"\xff\xfe" + payload[1:], "not UTF-8"


def _invalid(rng: random.Random, event: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """A JSON object that breaks the schema of :data:`~integration.flow.events.ClientEvent`."""
    broken = dict(event)
    choice = rng.randrange(5)
    if choice == 0:
        del broken["client_id"]
        return broken, "no client_id"
    if choice == 1:
        broken["event_type"] = "refund"
        return broken, "unknown event_type"
    if choice == 2:
        broken["event_time"] = "yesterday afternoon"
        return broken, "event_time is not a timestamp"
    if event["event_type"] in ("order", "return"):
        broken["amount"] = -abs(float(event["amount"]))
        return broken, "negative amount"
    if event["event_type"] == "rating":
        broken["stars"] = 9
        return broken, "stars out of 1-5"
    broken["duration_s"] = "long"
    return broken, "duration_s is not a number"


def generate(config: GeneratorConfig) -> list[SyntheticEvent]:
    """The day's events in event-time order (deterministic for a given config)."""
    day = _Day(config)
    rng = day.rng
    indexes, cumulative = _activity(config)
    times = _event_times(rng, config.day, config.count)
    picks = rng.choices(indexes, cum_weights=cumulative, k=config.count)
    out: list[SyntheticEvent] = []
    for number, (moment, index) in enumerate(zip(times, picks, strict=True), 1):
        client = day.profile(index)
        event = day.event(number, moment, client)
        kind: Kind = "valid"
        problem = ""
        if rng.random() < config.bad_ratio:
            if event["event_type"] == "order":
                day.orders[client.client_id].pop()  # a broken order never happened: nothing refers to it
            if rng.random() < 0.5:
                kind = "malformed"
                value, problem = _malformed(rng, orjson.dumps(event))
            else:
                kind = "invalid"
                broken, problem = _invalid(rng, event)
                value = orjson.dumps(broken)
        else:
            value = orjson.dumps(event)
        out.append(SyntheticEvent(client.client_id, value, kind, event["event_type"], moment, problem))
    return out


@dataclass
class ProduceReport:
    """What was produced: counts by kind and type, and when the first record was acknowledged."""

    topic: str
    produced: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    event_types: Counter[str] = field(default_factory=Counter)
    clients: int = 0
    first_acked_at: float | None = None
    seconds: float = 0.0

    @property
    def valid(self) -> int:
        return self.kinds["valid"]

    @property
    def bad(self) -> int:
        return self.kinds["malformed"] + self.kinds["invalid"]


def ensure_topic(kafka_config: dict[str, Any], topic: str, partitions: int = 3) -> None:
    """Create ``topic`` when it does not exist (the broker does not auto-create topics)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient({**kafka_config, "log_level": 4})
    try:
        existing = admin.list_topics(timeout=10).topics
    except KafkaException as exc:
        raise FlowError(f"Kafka at {kafka_config.get('bootstrap.servers')} did not answer: {exc}") from None
    if topic in existing:
        return
    future = admin.create_topics([NewTopic(topic, partitions, 1)])[topic]
    try:
        future.result(timeout=30)
    except KafkaException as exc:
        if exc.args and exc.args[0].name() == "TOPIC_ALREADY_EXISTS":
            return
        raise FlowError(f"cannot create topic {topic!r}: {exc}") from None


def produce(
    events: Sequence[SyntheticEvent],
    topic: str,
    kafka_config: dict[str, Any],
    rate: float | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ProduceReport:
    """Produce ``events`` in order, keyed by client id, at most ``rate`` per second (None: as fast as possible).

    Returns once every record is acknowledged by the broker; raises :class:`FlowError` if any is not.
    """
    from confluent_kafka import KafkaError, Producer

    if rate is not None and rate <= 0:
        raise FlowError(f"rate must be positive, got {rate}")
    report = ProduceReport(topic)
    failures: list[str] = []

    def delivered(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            failures.append(err.str())
        elif report.first_acked_at is None:
            report.first_acked_at = time.time()

    producer = Producer(
        {
            **kafka_config,
            "enable.idempotence": True,
            "max.in.flight.requests.per.connection": 1,  # no loss when a leader change reorders requests
            "linger.ms": 20,
            "compression.type": "lz4",
            "log_level": 4,
        }
    )
    started = time.monotonic()
    for number, event in enumerate(events):
        if rate is not None:
            ahead = started + number / rate - time.monotonic()
            if ahead > 0:
                producer.poll(ahead)
        while True:
            try:
                producer.produce(topic, event.value, event.key.encode(), on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
        report.kinds[event.kind] += 1
        report.event_types[event.event_type] += 1
        if on_progress is not None and number % 200 == 0:
            on_progress(number)
    left = producer.flush(60)
    if left or failures:
        raise FlowError(
            f"Kafka did not acknowledge {left + len(failures)} of {len(events)} events on {topic!r}"
            + (f" (first error: {failures[0]})" if failures else "")
        )
    report.produced = len(events)
    report.clients = len({e.key for e in events})
    report.seconds = time.monotonic() - started
    if on_progress is not None:
        on_progress(len(events))
    return report


def write_jsonl(events: Iterable[SyntheticEvent], path: Path) -> int:
    """Write one ``{"key", "value"}`` line per event (the value as text, broken bytes replaced)."""
    count = 0
    with path.open("wb") as out:
        for event in events:
            line = {"key": event.key, "kind": event.kind, "value": event.value.decode("utf-8", "replace")}
            out.write(orjson.dumps(line) + b"\n")
            count += 1
    return count


cli = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0] if __doc__ else None)


@cli.command()
def main(
    count: Annotated[int, typer.Option(min=1, help="Events to generate.")] = 5_000,
    clients: Annotated[int, typer.Option(min=1, help="Size of the client population.")] = 500,
    day: Annotated[
        datetime | None, typer.Option(formats=["%Y-%m-%d"], help="UTC day of the events (default: today).")
    ] = None,
    rate: Annotated[
        float | None, typer.Option(min=0.001, help="Events per second (default: unthrottled).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed; same seed and day, same events.")] = 7,
    skew: Annotated[float, typer.Option(min=0, help="Zipf exponent of client activity.")] = 1.1,
    bad_ratio: Annotated[
        float, typer.Option(min=0, max=1, help="Share of malformed or invalid events.")
    ] = 0.005,
    topic: Annotated[
        str | None, typer.Option(help="Kafka topic (default: $THIMBLE_FLOW_EVENTS_TOPIC or client-events).")
    ] = None,
    partitions: Annotated[int, typer.Option(min=1, help="Partitions when the topic is created.")] = 3,
    out: Annotated[Path | None, typer.Option(help="Write JSON lines to this file instead of Kafka.")] = None,
) -> None:
    """Generate one day of client events and produce them to Kafka (or write them to a file)."""
    from rich.console import Console

    from thimble.common.cli import user_errors
    from thimble.common.config import ThimbleSettings, load_settings

    @user_errors
    def run() -> None:
        console = Console(highlight=False)
        config = GeneratorConfig(count, clients, (day or datetime.now(UTC)).date(), seed, skew, bad_ratio)
        events = generate(config)
        if out is not None:
            written = write_jsonl(events, out)
            console.print(f"wrote {written} events for {config.day} to {out}")
            return
        kafka = load_settings(ThimbleSettings).kafka.client_config()
        name = topic or names.events_topic
        ensure_topic(kafka, name, partitions)
        report = produce(events, name, kafka, rate)
        kinds = ", ".join(f"{report.kinds[k]} {k}" for k in ("valid", "malformed", "invalid"))
        types = ", ".join(f"{report.event_types[t]} {t}s" for t in EVENT_TYPES)
        console.print(
            f"produced {report.produced} events for {config.day} to {name} in {report.seconds:.1f} s "
            f"({report.clients} clients; {kinds}; {types})"
        )

    run()


if __name__ == "__main__":
    cli()
