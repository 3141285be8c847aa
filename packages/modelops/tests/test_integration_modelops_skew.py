"""The skew check against real Redis and a real Delta journal: the online store written by thimble-consumer's
writer, the journal by thimble-etl, both from one FeatureSet."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
import yaml
from skew_featuresets import CLIENTS, SkewClient
from typer.testing import CliRunner

from thimble.common.config import ThimbleSettings
from thimble.modelops.cli import app
from thimble.modelops.config import ModelOpsSettings, load_modelops_settings
from thimble.modelops.skew import EventTimes, FieldMismatch, skew

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
HOUR = timedelta(hours=1)


def _client(i: int, **changes: Any) -> SkewClient:
    values: dict[str, Any] = {
        "client_id": f"c{i}",
        "event_time": T0 + i * HOUR,
        "orders": i,
        "spent": round(10.1 * i, 2),
        "rating": None if i % 2 else 4.5,
        "channel": "web" if i % 3 else None,
        "tags": [f"t{i}"] if i % 2 else [],
    }
    return SkewClient(**(values | changes))


CURRENT = [_client(i) for i in range(1, 7)]
OLDER = [_client(1, event_time=T0 - HOUR, orders=0, spent=0.0)]


@pytest.fixture(scope="module")
def journal(spark: Any, spark_settings: ThimbleSettings) -> str:
    """The feature set's journal table as thimble-etl's journal lays it out: c1 in two versions (the
    older one closed), c2..c6 in one; written directly, in one Delta commit."""
    ddl = ", ".join(f"`{name}` {kind}" for name, kind in CLIENTS.columns().items())
    ddl += ", row_hash string, valid_from timestamp, valid_to timestamp, is_current boolean"
    rows = []
    for c in [*OLDER, *CURRENT]:
        closed = c in OLDER
        tags = json.dumps(c.tags, separators=(",", ":"))
        values = {**c.model_dump(), "tags": tags}
        rows.append((*values.values(), "-", c.event_time, T0 if closed else None, not closed))
    table = CLIENTS.journal_table(spark_settings.warehouse.database)
    spark.createDataFrame(rows, ddl).coalesce(1).write.format("delta").mode("overwrite").saveAsTable(table)
    return table


@dataclass
class Store:
    client: redis.Redis
    prefix: str

    def write(self, *clients: SkewClient) -> None:
        """As thimble-consumer's OnlineStore sink writes them (latest event time wins)."""
        from thimble.consumer._online_store import OnlineStoreWriter, RedisBackend
        from thimble.consumer.sinks import OnlineStore

        sink = OnlineStore(CLIENTS.name, entity_key=CLIENTS.entity_key, event_time=CLIENTS.event_time)
        url = self.client.connection_pool.connection_kwargs
        backend = RedisBackend(f"redis://{url['host']}:{url['port']}/{url.get('db', 0)}")
        try:
            writer = OnlineStoreWriter(sink, self.prefix, backend)
            backend.apply([(writer.prepare(c, None), 0) for c in clients])
        finally:
            backend.close()

    def key(self, entity: str) -> str:
        return CLIENTS.online_key(self.prefix, entity)


@pytest.fixture
def store(redis_url: str) -> Iterator[Store]:
    """An online store holding every current row, under a prefix with glob characters in it, beside a
    decoy key that an unescaped pattern would match."""
    run = uuid.uuid4().hex[:8]
    client = redis.Redis.from_url(redis_url)
    store = Store(client, f"skew*[{run}]")
    # As long as the prefix, and matched by `skew*[<run>]:…` if the prefix's `*` and `[…]` were not escaped.
    decoy = CLIENTS.online_key("skew" + "x" * 10 + run[-1], "c99")
    client.hset(decoy, mapping={"orders": b"1", "_event_time": b"0"})
    store.write(*CURRENT)
    yield store
    client.delete(decoy, *client.keys(f"skew\\*\\[{run}\\]:*"))
    client.close()


def _settings(spark_settings: ThimbleSettings, redis_url: str, prefix: str) -> ModelOpsSettings:
    return load_modelops_settings(
        overrides={
            "warehouse": spark_settings.warehouse.model_dump(),
            "online_store": {"url": redis_url, "key_prefix": prefix},
        }
    )


def test_the_online_sample_scans_only_the_feature_sets_keys(store: Store) -> None:
    from thimble.modelops._skew_sides import OnlineSide
    from thimble.modelops.skew import SkewTarget

    target = SkewTarget.of(CLIENTS, "test")
    sampled = OnlineSide(store.client, store.prefix, target).sample(100, scan_limit=10_000)
    assert sorted(sampled) == [c.client_id for c in CURRENT]


def test_an_online_store_that_agrees_with_the_journal_has_no_skew(
    spark: Any, spark_settings: ThimbleSettings, redis_url: str, journal: str, store: Store
) -> None:
    report = skew(CLIENTS, 100, spark=spark, settings=_settings(spark_settings, redis_url, store.prefix))
    assert (report.table, report.entities, report.agreeing) == (journal, 6, 6)
    assert report.skewed == []
    assert report.share == 0.0
    assert (report.only_online, report.only_warehouse, report.mismatches) == ([], [], [])
    assert report.online_newer == []
    assert report.table_version is not None


def test_a_changed_field_a_missing_entity_and_lag_are_each_reported(
    spark: Any, spark_settings: ThimbleSettings, redis_url: str, journal: str, store: Store
) -> None:
    store.client.hset(store.key("c2"), "orders", b"99")  # same event time, another value
    store.client.hset(store.key("c5"), "spent", orjson.dumps(50.5 + 1e-12))  # within the tolerance
    store.client.delete(store.key("c3"))  # gone from the online store
    store.write(_client(4, event_time=T0 + 10 * HOUR, orders=5))  # a later event not loaded yet
    store.write(_client(7, event_time=T0))  # never loaded, though older than what was
    store.write(_client(8, event_time=T0 + 20 * HOUR))  # new since the last load
    store.client.hset(store.key("c6"), "_event_time", str(int((T0 + 5 * HOUR).timestamp() * 1000)))

    report = skew(CLIENTS, 100, spark=spark, settings=_settings(spark_settings, redis_url, store.prefix))

    ms = lambda t: int(t.timestamp() * 1000)  # noqa: E731
    assert report.entities == 8
    assert report.mismatches == [FieldMismatch("c2", "orders", 99, 2)]
    assert report.only_warehouse == ["c3"]
    assert report.online_newer == [EventTimes("c4", ms(T0 + 10 * HOUR), ms(T0 + 4 * HOUR))]
    assert report.warehouse_newer == [EventTimes("c6", ms(T0 + 5 * HOUR), ms(T0 + 6 * HOUR))]
    assert report.watermark_ms == ms(T0 + 6 * HOUR)
    assert [e.entity for e in report.only_online] == ["c7", "c8"]
    assert [e.entity for e in report.missing_from_warehouse] == ["c7"]
    assert report.skewed == ["c2", "c3", "c6", "c7"]
    assert report.agreeing == 2  # c1 and c5
    assert report.share == pytest.approx(4 / 8)


def _config(tmp_path: Path, spark_settings: ThimbleSettings, redis_url: str, prefix: str) -> str:
    path = tmp_path / "thimble.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "warehouse": spark_settings.warehouse.model_dump(),
                "spark": spark_settings.spark.model_dump(mode="json"),
                "online_store": {"url": redis_url, "key_prefix": prefix},
            }
        )
    )
    return str(path)


def test_the_command_exits_1_on_skew_above_the_tolerated_share(
    spark: Any,
    spark_settings: ThimbleSettings,
    redis_url: str,
    journal: str,
    store: Store,
    tmp_path: Path,
) -> None:
    runner = CliRunner()
    config = _config(tmp_path, spark_settings, redis_url, store.prefix)
    store.client.hset(store.key("c2"), "orders", b"99")
    skewed = runner.invoke(app, ["skew", "skew_featuresets:CLIENTS", "--config", config])
    assert skewed.exit_code == 1, skewed.output
    assert "orders" in skewed.output
    assert "99" in skewed.output

    by_name = ["skew", CLIENTS.name, "--entity-key", "client_id", "--event-time", "event_time"]
    tolerated = runner.invoke(app, [*by_name, "--max-skew", "0.2", "--json", "--config", config])
    assert tolerated.exit_code == 0, tolerated.output  # 1 of 6 entities
    data = json.loads(tolerated.output)
    assert data["skewed"] == ["c2"]
    assert data["mismatches"] == [{"entity": "c2", "field": "orders", "online": 99, "warehouse": 2}]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["../x*"], "feature set '../x*' is not a valid name"),
        (["no-such-set"], "needs --entity-key and --event-time"),
        (
            ["no-such-set", "--entity-key", "id", "--event-time", "t"],
            "no table 'test.no_such_set' in the warehouse",
        ),
        (
            ["skew_featuresets:NOT_A_FEATURE_SET"],
            "skew_featuresets:NOT_A_FEATURE_SET is a str, not a FeatureSet",
        ),
        (["skew_featuresets:missing"], "cannot import skew_featuresets:missing"),
        (["os:system;rm"], "is not an import path"),
        (
            ["skew-clients", "--entity-key", "id", "--event-time", "t", "--table", "x; DROP"],
            "not a valid table",
        ),
    ],
)
def test_a_bad_feature_set_is_one_line_naming_it(
    spark: Any, spark_settings: ThimbleSettings, redis_url: str, tmp_path: Path, args: list[str], message: str
) -> None:
    config = _config(tmp_path, spark_settings, redis_url, "skew-errors")
    result = CliRunner().invoke(app, ["skew", *args, "--config", config])
    assert result.exit_code == 2, result.output
    text = result.output.replace(f"'{spark_settings.warehouse.database}.", "'test.")
    assert message in text
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert "Traceback" not in result.output
