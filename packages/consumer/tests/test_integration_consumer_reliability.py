"""Nothing is lost: poison messages and kill -9 three times, at-least-once."""

from __future__ import annotations

import os
import random
import signal

import orjson
import pytest

from thimble.consumer import DeadLetter
from thimble.testing import produce, wait_until

from .conftest import start_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N = 6000
FAILOVER = {"THIMBLE_CONSUMER__SESSION_TIMEOUT_MS": "6000", "THIMBLE_CONSUMER__MAX_RETRIES": "1"}


def _record(i: int) -> tuple[int, object]:
    if i % 100 == 17:
        return i, b"{truncated"  # undecodable
    if i % 100 == 53:
        return i, {"id": "not-a-number"}  # schema violation
    if i % 100 == 71:
        return i, {"id": i, "poison": True}  # the handler raises
    return i, {"id": i}


def test_kill_9_three_times_loses_nothing(kafka_topic, kafka_config, reader, tmp_path) -> None:
    src, dst = kafka_topic("src", partitions=3), kafka_topic("dst")
    produce(kafka_config, src, [_record(i) for i in range(N)])
    out, dlq = reader(dst), reader(f"{src}.dlq")
    rng = random.Random(7)
    log = tmp_path / "run.log"
    for _kill in range(3):
        proc = start_cli(src, dst, src, sleep_ms=0.5, log=log, env=FAILOVER)
        target = len(out.poll()) + rng.randint(200, 900)
        wait_until(lambda t=target: len(out.poll()) >= t, 60, what="progress before the kill")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    proc = start_cli(src, dst, src, log=log, env=FAILOVER)
    poison = {i for i in range(N) if i % 100 in (17, 53, 71)}
    good = set(range(N)) - poison
    try:
        wait_until(
            lambda: {orjson.loads(m.value())["id"] for m in out.poll()} >= good, 120, what="every good output"
        )
        wait_until(lambda: {int(m.key()) for m in dlq.poll()} >= poison, 60, what="every dead letter")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(40) == 0, log.read_text()[-3000:]
    outputs = {orjson.loads(m.value())["id"] for m in out.poll()}
    letters = {int(m.key()): DeadLetter.from_record(m.key(), m.value(), m.headers()) for m in dlq.poll()}
    assert outputs == good
    assert set(letters) == poison
    assert len(outputs) + len(letters) == N  # consumed = outputs + dead letters
    for i, letter in letters.items():
        expected = {17: "decode", 53: "validate", 71: "handler"}[i % 100]
        assert letter.error_stage == expected, (i, letter)
        assert letter.original_topic == src
        assert letter.error_message
