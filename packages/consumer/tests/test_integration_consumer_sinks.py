"""The online store (real Redis) and landing (real Parquet files) sinks, and batch handlers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
import redis
from pydantic import BaseModel

from thimble.consumer import App, Landing, OnlineStore
from thimble.testing import produce, wait_until

from .conftest import make_settings

pytestmark = pytest.mark.integration


class Event(BaseModel):
    client_id: int
    amount: float
    ts: datetime


class Features(BaseModel):
    client_id: int
    last_amount: float
    ts: datetime


def test_online_store_latest_event_time_wins(kafka_topic, kafka_config, redis_url, start_app) -> None:
    src = kafka_topic("src")
    feature_set = f"fs-{uuid.uuid4().hex[:8]}"
    app = App("online")

    @app.handler(source=src, sink=OnlineStore(feature_set, entity_key="client_id", event_time="ts"))
    def featurize(event: Event) -> Features:
        return Features(client_id=event.client_id, last_amount=event.amount, ts=event.ts)

    produce(
        kafka_config,
        src,
        [
            (42, {"client_id": 42, "amount": 2.0, "ts": "2026-03-02T00:00:00Z"}),
            (42, {"client_id": 42, "amount": 1.0, "ts": "2026-03-01T00:00:00Z"}),  # late: must not win
            (7, {"client_id": 7, "amount": 5.0, "ts": "2026-03-01T00:00:00Z"}),
            (7, {"client_id": 7, "amount": 6.0, "ts": "2026-03-03T00:00:00Z"}),  # newer: wins
        ],
    )
    settings = make_settings(kafka_config, src)
    running = start_app(app, settings)
    client = redis.Redis.from_url(redis_url)
    try:
        key = f"features:{feature_set}:7"
        wait_until(lambda: client.hget(key, "last_amount") == b"6.0", 30, what="entity 7 updated")
        running.stop()
        stored = {
            k.decode(): orjson.loads(v) for k, v in client.hgetall(f"features:{feature_set}:42").items()
        }
        assert stored == {
            "client_id": 42,
            "last_amount": 2.0,
            "ts": "2026-03-02T00:00:00Z",
            "_event_time": int(datetime(2026, 3, 2, tzinfo=UTC).timestamp() * 1000),
        }
    finally:
        client.delete(f"features:{feature_set}:42", f"features:{feature_set}:7")
        client.close()


def test_online_store_dead_letters_outputs_that_forge_its_fields_or_name_no_entity(
    kafka_topic, kafka_config, redis_url, reader, start_app
) -> None:
    from thimble.consumer._dead_letters import DeadLetter

    src = kafka_topic("src")
    feature_set = f"fs-{uuid.uuid4().hex[:8]}"
    app = App("online-guard")

    @app.handler(source=src, sink=OnlineStore(feature_set, entity_key="id", event_time="ts"))
    def keep(event: dict[str, Any]) -> dict[str, Any]:
        return event

    produce(
        kafka_config,
        src,
        [
            (7, {"id": 7, "v": 1, "ts": "2026-03-01T00:00:00Z", "_event_time": 99_999_999_999_999}),
            (7, {"id": 7, "v": 2, "ts": "2026-03-02T00:00:00Z", "_event_time": "not a number"}),
            (7, {"id": 7, "v": 3, "ts": "2026-03-03T00:00:00Z", "_applied:x:0": 1, "_version": 9}),
            (0, {"id": None, "v": 4, "ts": "2026-03-04T00:00:00Z"}),
            (7, {"id": 7.0, "v": 5, "ts": "2026-03-05T00:00:00Z"}),  # entity 7 as well
        ],
    )
    running = start_app(app, make_settings(kafka_config, src))
    client = redis.Redis.from_url(redis_url)
    key = f"features:{feature_set}:7"
    try:
        dlq = reader(f"{src}.dlq")
        letters = sorted(
            (DeadLetter.from_record(m.key(), m.value(), m.headers()) for m in dlq.wait_for(4)),
            key=lambda d: d.original_offset,
        )
        wait_until(lambda: client.hget(key, "v") == b"5", 30, what="entity 7 updated by the legitimate event")
        assert running.stop() == 0  # the consumer went on: no Lua error stopped it
        assert [(d.original_offset, d.error_stage) for d in letters] == [(i, "output") for i in range(4)]
        assert "output field '_event_time'" in letters[0].error_message
        assert "output field '_applied:x:0'" in letters[2].error_message
        assert "an entity must be a string or an integer, got None" in letters[3].error_message
        assert client.hgetall(key) == {
            b"id": b"7.0",
            b"v": b"5",
            b"ts": b'"2026-03-05T00:00:00Z"',
            b"_event_time": str(int(datetime(2026, 3, 5, tzinfo=UTC).timestamp() * 1000)).encode(),
        }
        assert sorted(client.scan_iter(f"features:{feature_set}:*")) == [key.encode()]
    finally:
        client.delete(key)
        client.close()


def test_landing_files_are_partitioned_atomic_and_complete(
    kafka_topic, kafka_config, start_app, tmp_path: Path
) -> None:
    src = kafka_topic("src", partitions=2)
    app = App("landing")

    @app.handler(
        source=src, sink=[Landing("client_events", event_time="ts", batch_rows=10, flush_interval_s=0.3)]
    )
    def land(event: Event) -> Event:
        return event

    days = ["2026-01-01T10:00:00Z", "2026-01-02T23:59:59Z"]
    produce(kafka_config, src, [(i, {"client_id": i, "amount": i / 2, "ts": days[i % 2]}) for i in range(25)])
    settings = make_settings(kafka_config, src, tmp_path)
    running = start_app(app, settings)
    root = tmp_path / "landing" / "client_events"

    def rows() -> int:
        return sum(pq.read_metadata(f).num_rows for f in root.glob("date=*/part-*.parquet"))

    wait_until(lambda: rows() == 25, 30, what="25 landed rows")
    running.stop()
    assert sorted(p.name for p in root.iterdir()) == ["date=2026-01-01", "date=2026-01-02"]
    files = list(root.glob("date=*/*"))
    assert all(f.name.startswith("part-") and f.suffix == ".parquet" for f in files), (
        files
    )  # no temp file left
    table = pq.read_table(root / "date=2026-01-02")
    assert set(table.column_names) >= {
        "client_id",
        "amount",
        "ts",
        "_kafka_topic",
        "_kafka_partition",
        "_kafka_offset",
        "_landed_at",
    }
    assert str(table.schema.field("ts").type) == "timestamp[us, tz=UTC]"
    assert all(v % 2 == 1 for v in table.column("client_id").to_pylist())
    assert set(table.column("_kafka_topic").to_pylist()) == {src}
    from thimble.consumer import group_lag

    assert sum(p.committed or 0 for p in group_lag(settings, src, [src])) == 25


def test_a_restarted_consumer_lands_each_field_as_the_datasets_files_hold_it(
    kafka_topic, kafka_config, reader, start_app, tmp_path: Path
) -> None:
    import pyarrow as pa

    from thimble.consumer import DeadLetter

    src = kafka_topic("src")
    app = App("landing-types")

    @app.handler(source=src, sink=Landing("typed", batch_rows=1000, flush_interval_s=0.2))
    def land(record: dict[str, Any]) -> dict[str, Any]:
        return record

    settings = make_settings(kafka_config, src, tmp_path)
    root = tmp_path / "landing" / "typed"

    def files() -> list[Path]:
        return sorted(root.glob("date=*/part-*.parquet"))

    produce(kafka_config, src, [(1, {"v": 1, "e": {}})])
    first = start_app(app, settings)
    wait_until(lambda: len(files()) == 1, 30, what="the first file")
    first.stop()

    produce(kafka_config, src, [(2, {"v": 2.5, "e": {}}), (3, {"v": 3, "e": {"k": "x"}})])
    restarted = start_app(app, settings)  # a new process: it knows the dataset from its file only
    [dead] = reader(f"{src}.dlq").wait_for(1)
    wait_until(lambda: len(files()) == 2, 30, what="the second file")
    restarted.stop()
    letter = DeadLetter.from_record(dead.key(), dead.value(), dead.headers())
    assert letter.error_stage == "output"
    assert "field 'v': float where the dataset's files hold int" in letter.error_message
    schema = pa.unify_schemas([pq.read_schema(f) for f in files()])  # one type per column: Spark reads it
    assert str(schema.field("v").type) == "int64"
    rows = sorted((r for f in files() for r in pq.read_table(f).to_pylist()), key=lambda r: r["v"])
    assert [(r["v"], r.get("e")) for r in rows] == [(1, None), (3, {"k": "x"})]


def test_batch_handler_gets_bounded_batches(kafka_topic, kafka_config, reader, start_app) -> None:
    src, dst = kafka_topic("src", partitions=2), kafka_topic("dst")
    app = App("batches")
    sizes: list[int] = []

    @app.handler(source=src, sink=dst, batch_size=50, batch_wait_ms=100)
    def score(events: list[Event]) -> list[dict[str, float]]:
        sizes.append(len(events))
        return [{"client_id": e.client_id, "score": e.amount * 10} for e in events]

    produce(
        kafka_config,
        src,
        [(i, {"client_id": i, "amount": 1, "ts": "2026-01-01T00:00:00Z"}) for i in range(230)]
        + [(999, b"not json")],
    )
    running = start_app(app, make_settings(kafka_config, src))
    out = reader(dst).wait_for(230)
    reader(f"{src}.dlq").wait_for(1)
    assert running.stop() == 0
    assert max(sizes) <= 50
    assert sum(sizes) == 230
    assert max(sizes) == 50
    keyed = {m.key(): orjson.loads(m.value())["client_id"] for m in out}
    assert all(k == str(v).encode() for k, v in keyed.items())  # each output keeps its input's key
