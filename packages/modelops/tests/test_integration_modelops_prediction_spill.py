"""No prediction record is lost: what Kafka gives up on is counted, spilled and re-sent when it returns."""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from thimble.modelops import Registry
from thimble.modelops._prediction_log import spill_folder
from thimble.modelops.config import load_modelops_settings
from thimble.modelops.server import create_app
from thimble.testing import TopicReader, wait_until

pytestmark = pytest.mark.integration


class Forwarder:
    """A TCP relay from a loopback port to the broker: Kafka "comes back" when it starts."""

    def __init__(self, listener: socket.socket, target: tuple[str, int]) -> None:
        self.listener = listener
        self.target = target
        self.sockets: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def start(self) -> None:
        self.listener.listen(16)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()
        for s in self.sockets:
            s.close()


@pytest.fixture
def closed_port() -> Iterator[socket.socket]:
    """A bound loopback socket that does not listen yet: connections to it are refused."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        yield s


@pytest.fixture(autouse=True)
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Spill files under the test's folder; the prediction log's warnings captured."""
    caplog.set_level(logging.WARNING, "thimble.modelops._prediction_log")
    monkeypatch.setenv("THIMBLE_RUN_DIR", str(tmp_path))


def test_records_kafka_gives_up_on_are_counted_spilled_and_resent(
    saved_churn: Registry,
    redis_url: str,
    live: Callable[..., Any],
    kafka_config: dict[str, Any],
    kafka_topic: Callable[..., str],
    reader: Callable[[str], TopicReader],
    closed_port: socket.socket,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    topic = kafka_topic("spill")
    port = closed_port.getsockname()[1]
    kafka = {"bootstrap_servers": f"127.0.0.1:{port}", "extra": {"reconnect.backoff.max.ms": 300}}
    app = _app(saved_churn, redis_url, kafka, topic)
    server = live(app)
    plog = app.state.prediction_log
    rows = [{"client_id": i, "orders_7d": i % 20, "spend_7d": float(i)} for i in range(20)]
    with httpx.Client(base_url=server.url, timeout=10) as http:
        lost_ids = {http.post("/v1/models/churn/predict", json=r).json()["request_id"] for r in rows}
        wait_until(lambda: plog.spilled == 20, 30, what="20 records spilled after the message timeout")
        metrics = http.get("/metrics").text
        assert "thimble_modelops_prediction_log_spilled_total 20.0" in metrics
        assert plog.dropped == 0
        reports = [r for r in caplog.records if r.getMessage() == "prediction records not delivered to Kafka"]
        assert 1 <= len(reports) < 20  # logged, but not once per record
        assert "spilled" in reports[0].__dict__
        folder = spill_folder(topic)
        assert folder.is_relative_to(tmp_path)
        spilled = b"".join(p.read_bytes() for p in folder.iterdir())
        assert all(rid.encode() in spilled for rid in lost_ids)

        relay = Forwarder(closed_port, ("127.0.0.1", int(kafka_config["bootstrap.servers"].split(":")[-1])))
        relay.start()
        try:
            later_ids = {http.post("/v1/models/churn/predict", json=r).json()["request_id"] for r in rows[:3]}
            want = lost_ids | later_ids
            predictions = reader(topic)
            predictions.wait_until(
                lambda: want <= {v["request_id"] for v in predictions.values()},
                60,
                what=f"{len(want)} prediction records on Kafka",
            )
            got = {v["request_id"]: v for v in predictions.values()}
            wait_until(lambda: not any(folder.iterdir()), 30, what="the spill folder emptied")
            assert plog.resent >= 20  # (a probe sent while Kafka was away counts again)
            resent = re.search(
                r"^thimble_modelops_prediction_log_resent_total (\S+)$", http.get("/metrics").text, re.M
            )
            assert resent is not None
            assert float(resent.group(1)) == plog.resent
        finally:
            relay.close()
    first = next(r for r in got.values() if r["inputs"] == [rows[0]])
    assert first["outputs"] == saved_churn.load("churn@1").predict([rows[0]])


def test_a_missing_topic_is_said_at_start_and_its_records_wait_in_the_spill(
    saved_churn: Registry,
    redis_url: str,
    live: Callable[..., Any],
    kafka_config: dict[str, Any],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    topic = f"no-such-topic-{uuid.uuid4().hex[:8]}"
    app = _app(saved_churn, redis_url, {"bootstrap_servers": kafka_config["bootstrap.servers"]}, topic)
    server = live(app)
    wait_until(
        lambda: any(
            r.getMessage().startswith("the prediction log topic does not exist") for r in caplog.records
        ),
        30,
        what="a warning that the topic is missing",
    )
    warning = next(r for r in caplog.records if r.getMessage().startswith("the prediction log topic"))
    assert warning.__dict__["topic"] == topic
    plog = app.state.prediction_log
    with httpx.Client(base_url=server.url, timeout=10) as http:
        answer = http.post("/v1/models/churn/predict", json={"client_id": 1, "orders_7d": 2, "spend_7d": 3.0})
        assert answer.status_code == 200
        wait_until(lambda: plog.spilled >= 1, 30, what="the record spilled")
    assert plog.dropped == 0
    spilled = b"".join(p.read_bytes() for p in spill_folder(topic).iterdir())
    assert answer.json()["request_id"].encode() in spilled


def _app(registry: Registry, redis_url: str, kafka: dict[str, Any], topic: str) -> Any:
    """The server of ``churn`` logging predictions to ``topic``; Kafka gives up on a record after 1.5 s."""
    kafka = {**kafka, "extra": {"message.timeout.ms": 1500, **kafka.get("extra", {})}}
    settings = load_modelops_settings(
        overrides={
            "online_store": {"url": redis_url, "key_prefix": f"test-{uuid.uuid4().hex[:8]}"},
            "kafka": kafka,
            "modelops": {"registry": registry.url, "server": {"prediction_log_topic": topic}},
        }
    )
    return create_app(settings=settings, refs=["churn"], registry=registry)
