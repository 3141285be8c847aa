"""thimble-consumer survives a broker restart mid-run: nothing lost, no crash, a clean exit after.

Runs on a second stack of its own (never the shared broker): the broker is killed (SIGKILL) while the
consumer is handling a backlog and its outputs are in flight, then started again with ``stack.py up``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from integration._procs import alive
from integration._testing import Stack
from thimble.common.config import load_settings
from thimble.consumer import ConsumerSettings, group_lag
from thimble.testing import TopicReader, free_port_run, produce, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MESSAGES = 3000
POISON_EVERY = 97  # ~1% poison: a handler exception, dead-lettered at once
HANDLER_SLEEP_MS = 3  # keeps the backlog in flight long enough to restart the broker under it

APP_SOURCE = textwrap.dedent(
    """
    import os
    import time

    from pydantic import BaseModel

    from thimble.consumer import App


    class Event(BaseModel):
        id: int
        poison: bool = False


    class Result(BaseModel):
        id: int


    app = App("broker-restart")
    SLEEP_S = float(os.environ["RESTART_TEST_SLEEP_MS"]) / 1000


    @app.handler(source=os.environ["RESTART_TEST_SRC"], sink=os.environ["RESTART_TEST_DST"])
    def handle(event: Event) -> Result:
        time.sleep(SLEEP_S)
        if event.poison:
            raise ValueError(f"poison event {event.id}")
        return Result(id=event.id)
    """
)


def _ids(conf: dict[str, Any], topic: str, expected: int) -> list[int]:
    """Every ``id`` on ``topic`` (read_committed, from the beginning), once ``expected`` distinct ones are there."""
    with TopicReader(conf, topic) as out:

        def ids() -> list[int]:
            return [value["id"] for value in out.values() if value is not None]

        out.wait_until(lambda: len(set(ids())) >= expected, 60, what=f"{expected} distinct ids on {topic}")
        return ids()


def _readyz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def _end_offset(conf: dict[str, Any], topic: str) -> int:
    consumer = Consumer({**conf, "group.id": f"offsets-{uuid.uuid4().hex}"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions
        )
    finally:
        consumer.close()


@pytest.fixture
def consumer_proc(side_stack: Stack, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Topics on the side broker, MESSAGES produced, and ``thimble-consumer run`` started on them."""
    src, dst = f"restart-src-{uuid.uuid4().hex[:8]}", f"restart-dst-{uuid.uuid4().hex[:8]}"
    conf: dict[str, Any] = {"bootstrap.servers": side_stack.bootstrap}
    admin = AdminClient(conf)
    admin.create_topics([NewTopic(src, 3, 1)])[src].result(timeout=30)
    produce(conf, src, [(i, {"id": i, "poison": i % POISON_EVERY == 0}) for i in range(MESSAGES)])
    (tmp_path / "restart_app.py").write_text(APP_SOURCE)
    log = tmp_path / "consumer.log"
    port = free_port_run(19500)
    exe = str(Path(sys.executable).with_name("thimble-consumer"))
    env = {
        **os.environ,
        "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "RESTART_TEST_SRC": src,
        "RESTART_TEST_DST": dst,
        "RESTART_TEST_SLEEP_MS": str(HANDLER_SLEEP_MS),
        "THIMBLE_KAFKA__BOOTSTRAP_SERVERS": side_stack.bootstrap,
        "THIMBLE_METRICS__PORT": str(port),
        "THIMBLE_LOGGING__FORMAT": "json",
        "THIMBLE_CONSUMER__DRAIN_TIMEOUT_S": "20",
    }
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [exe, "run", "restart_app:app", "--group-id", f"g-{src}", "--create-topics"],
            env=env,
            stdout=out,
            stderr=out,
        )
    try:
        yield {"proc": proc, "src": src, "dst": dst, "conf": conf, "log": log, "port": port}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_broker_restart_mid_run_loses_nothing(side_stack: Stack, consumer_proc: dict[str, Any]) -> None:
    proc, src, dst, conf, log, port = (
        consumer_proc[k] for k in ("proc", "src", "dst", "conf", "log", "port")
    )

    def log_tail() -> str:
        return "\n".join(log.read_text(errors="replace").splitlines()[-30:])

    # Mid-run: some outputs written, most of the backlog still to handle.
    wait_until(
        lambda: proc.poll() is not None or _end_offset(conf, dst) >= MESSAGES // 10,
        60,
        what="the consumer to be under way",
    )
    assert proc.poll() is None, f"the consumer exited before the restart:\n{log_tail()}"
    assert _end_offset(conf, dst) < MESSAGES // 2, "the backlog was done before the broker went down"

    kafka_pid = side_stack.pids()["kafka"]
    os.kill(kafka_pid, signal.SIGKILL)
    wait_until(lambda: not alive(kafka_pid), 30, what="the side broker to be gone")
    wait_until(lambda: _readyz(port) == 503, 30, what="/readyz to answer 503 while the broker is down")
    result = side_stack.run("up")
    assert result.returncode == 0, result.stdout + result.stderr
    assert proc.poll() is None, f"the consumer died while the broker was down:\n{log_tail()}"

    settings = load_settings(
        ConsumerSettings, overrides={"kafka": {"bootstrap_servers": side_stack.bootstrap}}
    )

    def all_committed() -> bool:
        assert proc.poll() is None, f"the consumer exited:\n{log_tail()}"
        lags = group_lag(settings, f"g-{src}", [src], timeout_s=5)
        return sum(p.committed or 0 for p in lags) == MESSAGES

    wait_until(all_committed, 60, what=f"the group to commit all {MESSAGES} messages")
    wait_until(lambda: _readyz(port) == 200, 30, what="/readyz to answer 200 again")

    poison = {i for i in range(MESSAGES) if i % POISON_EVERY == 0}
    good = set(range(MESSAGES)) - poison
    outputs = _ids(conf, dst, len(good))
    dead = _ids(conf, f"{src}.dlq", len(poison))
    assert set(outputs) == good  # every good message has its output (at least once)
    assert set(dead) == poison  # every poison message is a dead letter
    assert len(set(outputs)) + len(set(dead)) == MESSAGES  # consumed = outputs + dead letters

    assert proc.poll() is None, f"the consumer exited:\n{log_tail()}"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, log_tail()
