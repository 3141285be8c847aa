"""Fixtures for thimble-consumer's tests: produce/read helpers and a consumer running in a thread."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer

from thimble.common.config import load_settings
from thimble.common.testing import wait_until
from thimble.consumer import App, ConsumerSettings
from thimble.consumer._runner import Runner


def produce(kafka_config: dict[str, Any], topic: str, records: list[tuple[Any, Any]], **produce_kw: Any) -> None:
    """Produce ``(key, value)`` pairs (values: bytes as is, else JSON) and wait for every ack."""
    producer = Producer({**kafka_config, "acks": "all", "linger.ms": 5})
    failures: list[Any] = []
    for key, value in records:
        raw = value if isinstance(value, bytes) else orjson.dumps(value)
        k = key if key is None or isinstance(key, bytes) else str(key).encode()
        producer.produce(topic, raw, k, on_delivery=lambda err, _m: failures.append(err) if err else None, **produce_kw)
        producer.poll(0)
    assert producer.flush(30) == 0
    assert not failures


@dataclass
class Reader:
    """Reads a topic from the beginning (read_committed) and keeps everything it saw."""

    kafka_config: dict[str, Any]
    topic: str
    records: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._consumer = Consumer({
            **self.kafka_config, "group.id": f"reader-{uuid.uuid4().hex}", "auto.offset.reset": "earliest",
            "enable.auto.commit": False, "isolation.level": "read_committed",
        })
        self._consumer.subscribe([self.topic])

    def poll(self) -> list[Any]:
        for msg in self._consumer.consume(1000, 0.2):
            if msg.error() is None:
                self.records.append(msg)
        return self.records

    def wait_for(self, count: int, timeout: float = 30) -> list[Any]:
        wait_until(lambda: len(self.poll()) >= count, timeout, what=f"{count} records on {self.topic} (have {len(self.records)})")
        return self.records

    def values(self) -> list[Any]:
        return [orjson.loads(m.value()) for m in self.records]

    def close(self) -> None:
        self._consumer.close()


@pytest.fixture
def reader(kafka_config: dict[str, Any]) -> Iterator[Callable[[str], Reader]]:
    made: list[Reader] = []

    def make(topic: str) -> Reader:
        r = Reader(kafka_config, topic)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def make_settings(kafka_config: dict[str, Any], group: str, tmp_path: Path | None = None, **consumer: Any) -> ConsumerSettings:
    overrides: dict[str, Any] = {
        "kafka": {"bootstrap_servers": kafka_config["bootstrap.servers"]},
        "consumer": {"group_id": group, "retry_backoff_ms": 10, "drain_timeout_s": 10, **consumer},
        "metrics": {"port": 0},
    }
    if tmp_path is not None:
        overrides["warehouse"] = {"landing": str(tmp_path / "landing")}
    return load_settings(ConsumerSettings, overrides=overrides)


@dataclass
class Running:
    runner: Runner
    thread: threading.Thread
    result: list[int]

    def stop(self, timeout: float = 30) -> int:
        self.runner.request_stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "consumer did not stop"
        return self.result[0]


@pytest.fixture
def start_app() -> Iterator[Callable[..., Running]]:
    """Run an app's consumer in a background thread; stopped at teardown."""
    started: list[Running] = []

    def start(app: App, settings: ConsumerSettings, worker_index: int = 0) -> Running:
        runner = Runner(app, settings, worker_index=worker_index)
        result: list[int] = []
        thread = threading.Thread(target=lambda: result.append(runner.run()), daemon=True)
        thread.start()
        running = Running(runner, thread, result)
        started.append(running)
        wait_until(lambda: runner.ready() or result, 30, what="consumer ready")
        return running

    yield start
    for running in started:
        if running.thread.is_alive():
            running.stop()
