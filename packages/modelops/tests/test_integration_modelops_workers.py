"""Worker processes of ``serve --workers 2`` die with their supervisor: a kill -9 frees the port."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from thimble.modelops import Registry
from thimble.testing import ServerProcess, free_port, port_free, wait_until

pytestmark = pytest.mark.integration


def _children(pid: int) -> set[int]:
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        out |= {int(c) for c in task.read_text().split()}
    return out


def _running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


@contextlib.contextmanager
def _serving_two_workers(registry: Registry, redis_url: str, tmp_path: Path) -> Iterator[tuple[Any, int]]:
    """``thimble-modelops serve --workers 2`` until both workers serve; its processes are killed at the end."""
    port = free_port()
    env = os.environ | {
        "THIMBLE_ONLINE_STORE__URL": redis_url,
        "THIMBLE_RUN_DIR": str(tmp_path),
        "TMPDIR": str(tmp_path / "tmp"),
        "THIMBLE_LOGGING__FORMAT": "json",
    }
    (tmp_path / "tmp").mkdir()
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    cli = Path(sys.executable).parent / "thimble-modelops"
    command = [cli, "serve", "churn@prod", "--port", str(port), "--workers", "2", "--registry", registry.url]
    with ServerProcess(
        command,
        ready_url=f"http://127.0.0.1:{port}/readyz",
        log=tmp_path / "serve.log",
        env=env,
        timeout=240,  # two spawned workers import everything: slow on a loaded machine
    ) as server:
        wait_until(  # both workers are past their startup (each logs once when it serves)
            lambda: server.output().count('"message":"serving"') >= 2, 240, what="both workers serving"
        )
        yield server.proc, port


def test_kill_9_of_the_supervisor_takes_its_workers_down(
    saved_churn: Registry, redis_url: str, tmp_path: Path
) -> None:
    with _serving_two_workers(saved_churn, redis_url, tmp_path) as (proc, port):
        workers = _children(proc.pid)
        assert len(workers) >= 2
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        wait_until(lambda: not any(_running(w) for w in workers), 30, what="the workers to exit")
        wait_until(lambda: port_free(port), 10, what="the port to be free for a restart")


def test_a_clean_stop_removes_the_metrics_folder(
    saved_churn: Registry, redis_url: str, tmp_path: Path
) -> None:
    with _serving_two_workers(saved_churn, redis_url, tmp_path) as (proc, _):
        assert [p.name[:25] for p in (tmp_path / "tmp").iterdir()] == ["thimble-modelops-metrics-"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    assert not any((tmp_path / "tmp").iterdir())
