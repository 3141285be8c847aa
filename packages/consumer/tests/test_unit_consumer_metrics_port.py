"""A metrics port in use is a user error told in one line: no traceback, exit 2, no endless restarts."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest
from pydantic import BaseModel

from thimble.consumer import App
from thimble.consumer._runner import Runner
from thimble.consumer.errors import ConsumerError

from .conftest import CLI_APP, cli_env, make_settings

pytestmark = pytest.mark.unit

EXE = str(Path(sys.executable).with_name("thimble-consumer"))


class Event(BaseModel):
    id: int


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another process could hold: bound and listening for the whole test."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def _run(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    """``thimble-consumer run --metrics-port port``; it must end by itself (a supervisor that restarts its
    workers forever does not)."""
    proc = subprocess.Popen(
        [EXE, "run", CLI_APP, "--metrics-port", str(port), "--no-create-topics", *args],
        env={
            **cli_env("metrics-port-src", "metrics-port-dst"),
            "THIMBLE_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def test_a_metrics_port_in_use_is_one_line_and_exit_2(taken_port: int) -> None:
    result = _run(taken_port)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    assert _error_lines(result.stderr) == [
        f"error: cannot serve metrics on 127.0.0.1:{taken_port}: Address already in use; "
        "set metrics.port (--metrics-port) to a free port, or 0 for any"
    ]


def test_workers_stop_on_a_metrics_port_in_use_instead_of_restarting(taken_port: int) -> None:
    result = _run(taken_port, "--workers", "2")
    assert result.returncode == 2
    output = result.stderr + result.stdout
    assert "Traceback" not in output
    [line] = _error_lines(result.stderr)  # reported once, by the supervisor
    assert f"cannot serve metrics on 127.0.0.1:{taken_port}: Address already in use" in line
    assert "metrics.port (--metrics-port)" in line
    logged = [orjson.loads(x) for x in output.splitlines() if x.startswith("{")]
    started = [r["worker"] for r in logged if r["message"] == "worker started"]
    assert sorted(started) == [0, 1]  # no worker was restarted
    assert not [r for r in logged if r["message"] == "worker exited; restarting"]


def test_a_worker_names_the_port_it_derived_from_the_setting(taken_port: int) -> None:
    app = App("metrics-port")

    @app.handler(source="anything")
    def h(event: Event) -> None: ...

    settings = make_settings({"bootstrap.servers": "127.0.0.1:1"}, "metrics-port")
    settings.metrics.port = taken_port - 1
    runner = Runner(app, settings, worker_index=1)
    with ThreadPoolExecutor(1) as pool:  # not on the main thread: the runner installs no signal handler
        failure = pool.submit(runner.run).exception(timeout=30)
    assert isinstance(failure, ConsumerError)
    assert str(failure) == (
        f"cannot serve metrics on 127.0.0.1:{taken_port}: Address already in use "
        "(worker 1 serves on metrics.port + 1); set metrics.port (--metrics-port) to a free port, or 0 for any"
    )
