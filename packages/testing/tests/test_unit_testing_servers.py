"""Servers for tests: uvicorn in a thread, a server command in its own process group."""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from thimble.testing import LiveServer, ServerProcess, answers_ok, free_port, port_free
from thimble.testing._servers import running_in_group

pytestmark = pytest.mark.unit


async def _hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})


def test_live_server_serves_an_asgi_app_and_frees_its_port() -> None:
    with LiveServer(_hello) as server, urllib.request.urlopen(server.url, timeout=5) as response:
        assert response.read() == b"hello"
    assert port_free(server.port)


def test_server_process_is_ready_when_it_answers_and_stops_with_its_children(tmp_path: Path) -> None:
    port = free_port()
    # A parent that starts the server as its child: stopping must reach the child too.
    command = [
        sys.executable,
        "-c",
        f"import subprocess, sys; subprocess.run([sys.executable, '-m', 'http.server', '{port}',"
        " '--bind', '127.0.0.1'])",
    ]
    url = f"http://127.0.0.1:{port}/"
    with ServerProcess(command, ready_url=url, log=tmp_path / "server.log", cwd=tmp_path) as server:
        assert answers_ok(url)
        assert server.proc is not None
        group = server.proc.pid
    assert not answers_ok(url)
    assert running_in_group(group) == []


def test_a_server_command_that_exits_fails_the_test_with_its_output(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "import sys; print('bad flag --prot'); sys.exit(2)"]
    server = ServerProcess(command, ready_url=f"http://127.0.0.1:{free_port()}/", log=tmp_path / "s.log")
    with pytest.raises(pytest.fail.Exception, match=r"exited with 2:\nbad flag --prot"), server:
        pass


def test_a_server_is_ready_when_its_own_check_says_so(tmp_path: Path) -> None:
    marker = tmp_path / "up"
    command = [
        sys.executable,
        "-c",
        f"import pathlib, time; pathlib.Path({str(marker)!r}).touch(); time.sleep(60)",
    ]
    with ServerProcess(command, ready=marker.exists, log=tmp_path / "s.log") as server:
        assert server.proc is not None
        assert server.proc.poll() is None
    assert server.proc.poll() is not None


def test_a_server_needs_one_readiness_check(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="one of ready_url and ready"):
        ServerProcess(["true"], log=tmp_path / "s.log")
