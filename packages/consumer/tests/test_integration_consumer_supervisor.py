"""The supervisor's workers die with it: kill -9 of the supervisor alone leaves no worker holding partitions."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import orjson
import pytest

from thimble.testing import produce, wait_until

from .conftest import start_cli

pytestmark = pytest.mark.integration


def _lines(log: Path) -> list[dict[str, object]]:
    out = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            out.append(orjson.loads(line))
    return out


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan is reaped by whoever adopted it, maybe later)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def test_workers_stop_when_the_supervisor_is_killed(kafka_topic, kafka_config, reader, tmp_path) -> None:
    src, dst = kafka_topic("src", partitions=2), kafka_topic("dst")
    log = tmp_path / "run.log"
    proc = start_cli(src, dst, src, "--workers", "2", log=log)
    produce(kafka_config, src, [(i, {"id": i}) for i in range(20)])
    reader(dst).wait_for(20, timeout=60)
    started = wait_until(
        lambda: [r for r in _lines(log) if r["message"] == "worker started"][-2:] or None,
        30,
        what="two workers started",
    )
    pids = [int(str(r["pid"])) for r in started]
    wait_until(
        lambda: sorted(r.get("worker") for r in _lines(log) if r["message"] == "consuming") == [0, 1],
        60,
        what="both workers consuming",
    )
    assert all(_running(pid) for pid in pids)

    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)

    try:
        wait_until(lambda: not any(_running(pid) for pid in pids), 30, what=f"workers {pids} gone")
    finally:
        for pid in filter(_running, pids):
            os.kill(pid, signal.SIGKILL)
    stopped = [r for r in _lines(log) if r["message"] == "stopped cleanly"]
    assert sorted(r["worker"] for r in stopped) == [0, 1]  # each drained, committed, and said which it was
