"""The smoke round-trip over the running local stack: Kafka, Spark + Delta Lake, Redis.

    python -m integration.demo

A message goes through the real broker and back, Spark writes a Delta table and reads its history back,
Redis stores and returns a value. Clients are configured by thimble-common's settings (``THIMBLE_*``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from thimble.common.cli import user_errors
from thimble.common.config import ThimbleSettings, load_settings
from thimble.common.errors import ServiceUnavailableError, ThimbleError

KAFKA_TIMEOUT_S = 30.0
MESSAGES = 3

app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0] if __doc__ else None)
console = Console(highlight=False)


@dataclass
class Check:
    """One round-trip's outcome, as the summary shows it."""

    name: str
    ok: bool = False
    detail: str = ""
    seconds: float = 0.0
    rows: list[tuple[str, ...]] = field(default_factory=list)


def kafka_round_trip(settings: ThimbleSettings) -> str:
    """Create a topic, produce messages, consume them back with a fresh group, delete the topic."""
    from confluent_kafka import Consumer, KafkaException, Producer
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    conf = settings.kafka.client_config()
    servers = conf["bootstrap.servers"]
    # Level 4 (warning): librdkafka's informational lines would clutter the summary.
    admin = AdminClient({**conf, "log_level": 4})
    try:
        admin.list_topics(timeout=10)
    except KafkaException:
        raise ServiceUnavailableError(
            f"Kafka at {servers} did not answer; start it with `./dev stack up`"
        ) from None
    topic = f"thimble-smoke-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=KAFKA_TIMEOUT_S)
    try:
        producer = Producer(conf)
        sent = [f"hello {i} from thimble".encode() for i in range(MESSAGES)]
        for i, value in enumerate(sent):
            producer.produce(topic, key=str(i).encode(), value=value)
        if producer.flush(KAFKA_TIMEOUT_S) != 0:
            raise ThimbleError(
                f"Kafka at {servers} did not acknowledge the messages within {KAFKA_TIMEOUT_S:.0f}s"
            )
        consumer = Consumer(
            {**conf, "group.id": topic, "auto.offset.reset": "earliest", "enable.auto.commit": False}
        )
        received: list[Any] = []
        try:
            consumer.subscribe([topic])
            deadline = time.monotonic() + KAFKA_TIMEOUT_S
            while len(received) < MESSAGES and time.monotonic() < deadline:
                message = consumer.poll(0.5)
                if message is not None and message.error() is None:
                    received.append(message)
        finally:
            consumer.close()
        values = [m.value() for m in received]
        if values != sent:
            raise ThimbleError(
                f"sent {MESSAGES} messages to {topic} but consumed {len(values)} within {KAFKA_TIMEOUT_S:.0f}s"
            )
        offsets = f"{received[0].offset()}-{received[-1].offset()}"
        return (
            f"{MESSAGES} messages produced and consumed through {servers} (topic {topic}, offsets {offsets})"
        )
    finally:
        admin.delete_topics([topic])[topic].result(timeout=KAFKA_TIMEOUT_S)


def delta_round_trip(settings: ThimbleSettings) -> tuple[str, list[tuple[str, ...]]]:
    """Write a Delta table in two commits with Spark, read it and its ``DESCRIBE HISTORY`` back."""
    from thimble.common.spark import build_spark_session

    spark = build_spark_session(settings, app_name="thimble-smoke")
    table = f"`{settings.warehouse.database}`.smoke_events"
    spark.sql(f"DROP TABLE IF EXISTS {table}")
    first = spark.createDataFrame([(1, "signup"), (2, "login")], "id INT, event STRING")
    first.write.format("delta").mode("overwrite").saveAsTable(table)
    spark.createDataFrame([(3, "purchase")], "id INT, event STRING").write.format("delta").mode(
        "append"
    ).saveAsTable(table)
    count = spark.table(table).count()
    history = spark.sql(f"DESCRIBE HISTORY {table}").orderBy("version").collect()
    rows: list[tuple[str, ...]] = [
        (str(h["version"]), str(h["operation"]), str(h["operationMetrics"].get("numOutputRows", "")))
        for h in history
    ]
    if count != 3 or len(rows) != 2:
        raise ThimbleError(
            f"expected 3 rows in 2 versions of {table}, found {count} rows in {len(rows)} versions"
        )
    detail = spark.sql(f"DESCRIBE DETAIL {table}").first()
    where = str(detail["location"]).removeprefix("file:") if detail is not None else "?"
    return f"{table.replace('`', '')}: {count} rows in {len(rows)} versions at {where}", rows


def redis_round_trip(settings: ThimbleSettings) -> str:
    """Set a value with a TTL, read it back, delete it."""
    import redis

    url = settings.online_store.url
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        key, value = f"thimble:smoke:{uuid.uuid4().hex[:8]}", b"features-ok"
        try:
            client.set(key, value, ex=60)
        except redis.ConnectionError:
            raise ServiceUnavailableError(
                f"Redis at {url} did not answer; start it with `./dev stack up`"
            ) from None
        got = client.get(key)
        client.delete(key)
    finally:
        client.close()
    if got != value:
        raise ThimbleError(f"Redis at {url} returned {got!r} for {key}, expected {value!r}")
    return f"SET/GET {key} through {url}"


def _run(name: str, step: Callable[[], Any]) -> Check:
    check = Check(name)
    t0 = time.monotonic()
    with console.status(f"{name}…"):
        try:
            result = step()
        except ThimbleError as exc:
            check.detail = str(exc)
        except Exception as exc:
            check.detail = f"{type(exc).__name__}: {exc}"
        else:
            check.ok = True
            check.detail, check.rows = result if isinstance(result, tuple) else (result, [])
    check.seconds = time.monotonic() - t0
    return check


@app.command()
@user_errors
def main() -> None:
    """Run the smoke round-trip over Kafka, Spark + Delta Lake and Redis; exit 1 if any fails."""
    settings: ThimbleSettings = load_settings()
    checks = [
        _run("Kafka", lambda: kafka_round_trip(settings)),
        _run("Redis", lambda: redis_round_trip(settings)),
        _run("Spark + Delta", lambda: delta_round_trip(settings)),
    ]
    summary = Table(title="Thimble smoke round-trip", title_justify="left")
    summary.add_column("service")
    summary.add_column("result")
    summary.add_column("time", justify="right")
    summary.add_column("detail", overflow="fold")
    for check in checks:
        mark = "[green]ok[/]" if check.ok else "[red]FAILED[/]"
        summary.add_row(check.name, mark, f"{check.seconds:.1f}s", check.detail)
    console.print(summary)
    for check in checks:
        if check.rows:
            history = Table(title="DESCRIBE HISTORY smoke_events", title_justify="left")
            for column in ("version", "operation", "rows written"):
                history.add_column(column)
            for row in check.rows:
                history.add_row(*row)
            console.print(history)
    if not all(check.ok for check in checks):
        raise typer.Exit(1)
    console.print("[bold green]The local stack works end to end.[/]")


if __name__ == "__main__":
    app()
