"""Worker processes of ``serve --workers 2`` die with their supervisor: a kill -9 frees the port."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import free_port

from thimble.modelops import Registry
from thimble.testing import wait_until

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


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@contextlib.contextmanager
def _serving_two_workers(registry: Registry, redis_url: str, tmp_path: Path) -> Iterator[tuple[Any, int]]:
    """``thimble-modelops serve --workers 2`` until ready; every process it started is killed at the end."""
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
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        proc = subprocess.Popen(
            [
                str(cli),
                "serve",
                "churn@prod",
                "--port",
                str(port),
                "--workers",
                "2",
                "--registry",
                registry.url,
            ],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    workers: set[int] = set()
    try:
        wait_until(
            lambda: (
                proc.poll() is not None
                or httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
            ),
            240,  # two spawned workers import everything: slow on a loaded machine
            what="thimble-modelops serve with two workers",
        )
        assert proc.poll() is None, log.read_text()[-3000:]
        wait_until(  # both workers are past their startup (each logs once when it serves)
            lambda: log.read_text().count('"message":"serving"') >= 2, 240, what="both workers serving"
        )
        workers = _children(proc.pid)
        yield proc, port
    finally:
        for pid in [proc.pid, *workers]:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)


def test_kill_9_of_the_supervisor_takes_its_workers_down(
    saved_churn: Registry, redis_url: str, tmp_path: Path
) -> None:
    with _serving_two_workers(saved_churn, redis_url, tmp_path) as (proc, port):
        workers = _children(proc.pid)
        assert len(workers) >= 2
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        wait_until(lambda: not any(_running(w) for w in workers), 30, what="the workers to exit")
        wait_until(lambda: _port_free(port), 10, what="the port to be free for a restart")


def test_a_clean_stop_removes_the_metrics_folder(
    saved_churn: Registry, redis_url: str, tmp_path: Path
) -> None:
    with _serving_two_workers(saved_churn, redis_url, tmp_path) as (proc, _):
        assert [p.name[:25] for p in (tmp_path / "tmp").iterdir()] == ["thimble-modelops-metrics-"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    assert not any((tmp_path / "tmp").iterdir())
