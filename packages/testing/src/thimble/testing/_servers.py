"""Real HTTP servers for tests: an ASGI app under uvicorn in a thread, or a server command in a process."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from thimble.testing._ports import LOOPBACK, free_port
from thimble.testing._wait import wait_until


class LiveServer:
    """An ASGI app under a real uvicorn on a free loopback port, in a thread; a context manager."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        config = uvicorn.Config(
            app, host=LOOPBACK, port=self.port, log_level="warning", access_log=False, lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def answers_ok(url: str, timeout: float = 2.0) -> bool:
    """``url`` answers 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status) == 200
    except OSError:
        return False


class ServerProcess:
    """A server command in a session of its own, ready once ``ready_url`` answers 200 (or ``ready()`` is
    true); a context manager.

    Its output goes to ``log``. Entering fails the test with the log's tail if the command exits or does
    not get ready within ``timeout`` seconds; leaving stops its whole process group (SIGTERM, then SIGKILL
    for whatever is left, such as workers whose supervisor the test killed).
    """

    def __init__(
        self,
        command: Sequence[str | Path],
        *,
        log: Path,
        ready_url: str | None = None,
        ready: Callable[[], bool] | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        timeout: float = 90.0,
    ) -> None:
        if (ready_url is None) == (ready is None):
            raise TypeError("ServerProcess needs one of ready_url and ready")
        self.command = [str(part) for part in command]
        self.ready_what = f"{' '.join(self.command[:2])} to answer {ready_url or 'its readiness check'}"
        self.ready: Callable[[], bool] = ready or (lambda: answers_ok(str(ready_url)))
        self.log = log
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = None

    def output(self) -> str:
        """What the server has written so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def __enter__(self) -> ServerProcess:
        with self.log.open("wb") as out:
            self.proc = proc = subprocess.Popen(
                self.command,
                env=self.env,
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_until(lambda: proc.poll() is not None or self.ready(), self.timeout, what=self.ready_what)
            if proc.poll() is not None:
                pytest.fail(f"{self.command[0]} exited with {proc.returncode}:\n{self.output()[-3000:]}")
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL to what is left of it after 30 s; returns once every
        process of the group has ended (a killed child can outlive its parent for a moment)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        group = self.proc.pid
        wait_until(lambda: not running_in_group(group), 10, what=f"the processes of group {group} ended")


def running_in_group(pgid: int) -> list[int]:
    """The processes of group ``pgid`` that have not ended (zombies, which nobody may reap, have)."""
    running = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _ppid, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except OSError:
            continue
        if int(group) == pgid and state != "Z":
            running.append(int(stat.parent.name))
    return running
