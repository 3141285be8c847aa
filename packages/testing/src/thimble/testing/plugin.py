"""The pytest plugin ``thimble``: fixtures for tests that run against the real local stack.

The stack is started by ``./dev test`` (or ``./dev stack up``); these fixtures wait until each service
answers a real request and fail with a clear message when it does not.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from thimble.common.config import ThimbleSettings, load_settings
from thimble.testing._kafka import TopicReader
from thimble.testing._servers import LiveServer
from thimble.testing._wait import wait_until

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

READY_TIMEOUT_S = 60.0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "spark: takes the `spark` fixture (given to every such test; `-m spark` selects them)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that takes the Spark session ``spark``, so the Spark tests can be run again over
    Spark Connect (``THIMBLE_SPARK__REMOTE=sc://... pytest -m spark``)."""
    for item in items:
        if "spark" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.spark)


@pytest.fixture(scope="session")
def thimble_settings() -> ThimbleSettings:
    """Settings as the environment gives them (``THIMBLE_*``, ``THIMBLE_CONFIG``)."""
    return load_settings()


@pytest.fixture(scope="session")
def kafka_config(thimble_settings: ThimbleSettings) -> dict[str, Any]:
    """librdkafka config of a broker that answered a metadata request."""
    from confluent_kafka.admin import AdminClient

    conf = thimble_settings.kafka.client_config()
    admin = AdminClient(conf)
    wait_until(
        lambda: admin.list_topics(timeout=2).brokers,
        READY_TIMEOUT_S,
        what=f"Kafka at {conf['bootstrap.servers']} (start it with `./dev stack up`)",
    )
    return conf


@pytest.fixture
def kafka_topic(kafka_config: dict[str, Any]) -> Iterator[Callable[..., str]]:
    """Factory: ``kafka_topic(partitions=1)`` creates a fresh topic, waits until it exists, deletes it after."""
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient(kafka_config)
    created: list[str] = []

    def make(prefix: str = "test", partitions: int = 1, config: dict[str, str] | None = None) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        futures = admin.create_topics([NewTopic(name, partitions, 1, config=config or {})])
        futures[name].result(timeout=30)
        wait_until(
            lambda: (
                len(admin.list_topics(name, timeout=2).topics[name].partitions) == partitions
                and admin.list_topics(name, timeout=2).topics[name].error is None
            ),
            what=f"topic {name}",
        )
        created.append(name)
        return name

    yield make
    if created:
        for future in admin.delete_topics(created).values():
            with contextlib.suppress(Exception):
                future.result(timeout=30)


@pytest.fixture
def reader(kafka_config: dict[str, Any]) -> Iterator[Callable[[str], TopicReader]]:
    """Factory: ``reader(topic)`` reads ``topic`` from its beginning; every reader is closed after the test."""
    made: list[TopicReader] = []

    def make(topic: str) -> TopicReader:
        made.append(TopicReader(kafka_config, topic))
        return made[-1]

    yield make
    for topic_reader in made:
        topic_reader.close()


@pytest.fixture(scope="session")
def redis_url(thimble_settings: ThimbleSettings) -> str:
    """URL of a Redis server that answered PING."""
    import redis

    url = thimble_settings.online_store.url
    client = redis.Redis.from_url(url)
    wait_until(client.ping, READY_TIMEOUT_S, what=f"Redis at {url} (start it with `./dev stack up`)")
    client.close()
    return url


@pytest.fixture(scope="session")
def spark_settings(tmp_path_factory: pytest.TempPathFactory) -> ThimbleSettings:
    """Settings whose warehouse, landing area and metastore live in a fresh temporary folder.

    Over Spark Connect (``THIMBLE_SPARK__REMOTE``) the server's metastore is shared with every other
    client, so the test database gets a name of its own (``test_<random>``) instead of ``test``.
    """
    root: Path = tmp_path_factory.mktemp("warehouse")
    shared_metastore = bool(load_settings().spark.remote)
    return load_settings(
        overrides={
            "warehouse": {
                "location": str(root / "tables"),
                "landing": str(root / "landing"),
                "metastore": str(root / "metastore"),
                "database": f"test_{uuid.uuid4().hex[:10]}" if shared_metastore else "test",
            },
            "spark": {"shuffle_partitions": 2, "driver_memory": "1g"},
        }
    )


@pytest.fixture(scope="session")
def spark(spark_settings: ThimbleSettings) -> Iterator[SparkSession]:
    """One real SparkSession for the whole test session: a Spark Connect client when
    ``THIMBLE_SPARK__REMOTE`` is set (its test database is dropped afterwards), else Spark in process."""
    from thimble.common.spark import build_spark_session

    session = build_spark_session(spark_settings, app_name="thimble-tests")
    yield session
    if spark_settings.spark.remote:
        with contextlib.suppress(Exception):
            session.sql(f"DROP DATABASE IF EXISTS `{spark_settings.warehouse.database}` CASCADE")
    session.stop()


@pytest.fixture
def live() -> Iterator[Callable[[Any], LiveServer]]:
    """Factory: ``live(app)`` runs ``app`` under uvicorn on a free loopback port until the test ends."""
    servers: list[LiveServer] = []

    def start(app: Any) -> LiveServer:
        servers.append(LiveServer(app).__enter__())
        return servers[-1]

    yield start
    for server in servers:
        server.__exit__()
