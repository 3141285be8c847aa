"""Log lines of a consumer: an outage is a few lines, not one per reconnect; every line names its worker."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, Producer
from pydantic import BaseModel

from thimble.common.config import load_settings
from thimble.consumer import App, ConsumerSettings
from thimble.consumer import _client_errors as client_errors
from thimble.consumer import _log_context as log_context
from thimble.consumer._kafka import consumer_config, producer_config
from thimble.consumer._runner import Runner
from thimble.consumer.testing import TestClient
from thimble.testing import free_port, wait_until

pytestmark = pytest.mark.unit


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self) -> list[str]:
        return [r.getMessage() for r in self.records]


@pytest.fixture
def lines() -> Iterator[Lines]:
    root = logging.getLogger()
    handler, level = Lines(), root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


def test_an_outage_is_one_line_a_summary_and_one_line_when_it_ends(
    lines: Lines, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_errors, "SUMMARY_EVERY_S", 1.0)
    monkeypatch.setattr(client_errors, "QUIET_S", 1.5)
    settings = load_settings(
        ConsumerSettings, overrides={"kafka": {"bootstrap_servers": f"127.0.0.1:{free_port()}"}}
    )
    app = App("outage-test")

    @app.handler(source="nowhere")
    def ignore(event: bytes) -> None:
        return None

    runner = Runner(app, settings)  # its error callback and librdkafka's logger, as in production
    with log_context.installed():  # what a run installs
        consumer = Consumer({**consumer_config(settings, "g", "c"), "error_cb": runner._on_kafka_error})
        producers = [Producer({**producer_config(settings, "p"), "error_cb": runner._on_kafka_error})]
        consumer.subscribe(["nowhere"])
        wait_until(
            lambda: (
                consumer.poll(0.1) is None
                and producers[0].poll(0) == 0
                and "Kafka client errors continue" in lines.messages()
            ),
            20,
            what="a summary line",
        )
        consumer.close()
        producers.clear()  # the outage ends: no client reports errors any more
        wait_until(lambda: "Kafka client errors stopped" in lines.messages(), 10, what="the end line")
    messages = lines.messages()
    started = [r for r in lines.records if hasattr(r, "outage")]
    [stopped] = [r for r in lines.records if r.getMessage() == "Kafka client errors stopped"]
    summaries = [r for r in lines.records if r.getMessage() == "Kafka client errors continue"]
    assert len(started) == 1, messages
    assert "Connect to" in started[0].getMessage() or "Connect to" in str(started[0].__dict__.get("error"))
    assert summaries
    assert all(int(r.__dict__["errors_since_last_line"]) > 0 for r in summaries)
    assert int(stopped.__dict__["errors"]) >= 10  # librdkafka retried many times...
    assert len(messages) <= 2 + len(summaries), messages  # ...and that took a handful of lines


def test_other_warnings_pass_unchanged(lines: Lines) -> None:
    with log_context.installed():
        for _ in range(3):
            logging.getLogger("thimble.consumer._processing").warning("message dead-lettered")
            logging.getLogger(client_errors.RUNNER_LOGGER).warning("partitions lost")
    assert lines.messages() == ["message dead-lettered", "partitions lost"] * 3


def test_every_line_of_a_worker_names_it(lines: Lines) -> None:
    log_context.tag_worker(3)
    try:
        logged = threading.Thread(target=lambda: logging.getLogger("thimble.x").info("from a thread"))
        logged.start()
        logged.join()
        logging.getLogger("thimble.y").info("from the main thread")
    finally:
        for f in list(lines.filters):
            lines.removeFilter(f)
    assert [(r.getMessage(), r.__dict__.get("worker")) for r in lines.records] == [
        ("from a thread", 3),
        ("from the main thread", 3),
    ]


class Event(BaseModel):
    n: int


def test_a_dead_letter_of_a_batch_names_its_own_record(lines: Lines) -> None:
    app = App("batch-log-test")

    @app.handler(source="events", batch_size=3)
    def count(events: list[Event]) -> None:
        return None

    with TestClient(app) as client:
        for value in ({"n": 1}, b"{not json", {"n": 3}):
            client.send("events", value)
    (record,) = [r for r in lines.records if r.getMessage() == "message dead-lettered"]
    assert (record.topic, record.partition, record.offset) == ("events", 0, 1)  # type: ignore[attr-defined]
