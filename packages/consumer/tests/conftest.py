"""Fixtures for thimble-consumer's tests: settings, and a consumer running in a thread or a process."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from thimble.common.config import load_settings
from thimble.consumer import App, ConsumerSettings
from thimble.consumer._runner import Runner
from thimble.testing import produce, wait_until


@pytest.fixture(autouse=True)
def _restore_environment() -> Iterator[None]:
    """``thimble-consumer run`` exports its settings to its own process; a CLI test run in-process keeps none."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def make_settings(
    kafka_config: dict[str, Any], group: str, tmp_path: Path | None = None, **consumer: Any
) -> ConsumerSettings:
    overrides: dict[str, Any] = {
        "kafka": {"bootstrap_servers": kafka_config["bootstrap.servers"]},
        "consumer": {
            "group_id": group,
            "retry_backoff_ms": 10,
            "drain_timeout_s": 10,
            "create_topics": True,
            **consumer,
        },
        "metrics": {"port": 0},
    }
    if tmp_path is not None:
        overrides["warehouse"] = {"landing": str(tmp_path / "landing")}
    return load_settings(ConsumerSettings, overrides=overrides)


class Numbered(BaseModel):
    id: int


def busy_copy(
    name: str, src: str, dst: str, busy_at: int = 150, busy_s: float = 8.0
) -> tuple[App, list[int]]:
    """An app copying ``{"id": n}`` records from ``src`` to ``dst`` whose handler, on its ``busy_at``-th
    call, stays busy ``busy_s`` (past a 6 s ``max.poll.interval.ms``); the ids it was called with."""
    app = App(name)
    calls: list[int] = []

    @app.handler(source=src, sink=dst)
    def copy(event: Numbered) -> Numbered:
        calls.append(event.id)
        if len(calls) == busy_at:
            time.sleep(busy_s)
        return event

    return app, calls


@dataclass
class Running:
    runner: Runner
    thread: threading.Thread
    result: list[Any]

    def stop(self, timeout: float = 30) -> int:
        self.runner.request_stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "consumer did not stop"
        if isinstance(self.result[0], BaseException):
            raise self.result[0]
        return int(self.result[0])


@pytest.fixture
def start_app() -> Iterator[Callable[..., Running]]:
    """Run an app's consumer in a background thread; stopped at teardown."""
    started: list[Running] = []

    def start(app: App, settings: ConsumerSettings, worker_index: int = 0) -> Running:
        runner = Runner(app, settings, worker_index=worker_index)
        result: list[Any] = []

        def target() -> None:
            try:
                result.append(runner.run())
            except BaseException as exc:
                result.append(exc)

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        running = Running(runner, thread, result)
        started.append(running)
        wait_until(lambda: runner.ready() or result, 30, what="consumer ready")
        if result and isinstance(result[0], BaseException):
            raise result[0]
        return running

    yield start
    for running in started:
        if running.thread.is_alive():
            running.stop()


def join_while_busy(
    start: Callable[..., Running],
    app: App,
    calls: list[int],
    settings: ConsumerSettings,
    kafka_config: dict[str, Any],
    src: str,
    n: int = 200,
) -> tuple[Running, Running]:
    """Send ids ``0..n-1`` to ``src``, run ``app`` (a :func:`busy_copy`) and, once its handler is busy,
    a second member of its group: the busy member and the one that joined."""
    produce(kafka_config, src, [(i, {"id": i}) for i in range(n)])
    busy = start(app, settings)
    wait_until(lambda: len(calls) >= 150, 30, what="the handler busy")
    return busy, start(app, settings, worker_index=1)


CLI_APP = str(Path(__file__).with_name("consumer_cli_app.py")) + ":app"


def cli_env(src: str, dst: str, sleep_ms: float = 0) -> dict[str, str]:
    import os

    return {
        **os.environ,
        "THIMBLE_TEST_SRC": src,
        "THIMBLE_TEST_DST": dst,
        "THIMBLE_TEST_SLEEP_MS": str(sleep_ms),
        "THIMBLE_METRICS__PORT": "0",
        "THIMBLE_LOGGING__FORMAT": "json",
        "THIMBLE_CONSUMER__RETRY_BACKOFF_MS": "10",
    }


def start_cli(
    src: str,
    dst: str,
    group: str,
    *args: str,
    sleep_ms: float = 0,
    log: Path | None = None,
    env: dict[str, str] | None = None,
    app: str = CLI_APP,
) -> Any:
    """``thimble-consumer run`` of the test app (or of ``app``) in a subprocess."""
    import subprocess
    import sys

    exe = str(Path(sys.executable).with_name("thimble-consumer"))
    out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        [exe, "run", app, "--group-id", group, "--create-topics", *args],
        env={**cli_env(src, dst, sleep_ms), **(env or {})},
        stdout=out,
        stderr=out,
    )
    _cli_procs.append(proc)
    return proc


_cli_procs: list[Any] = []


@pytest.fixture(autouse=True)
def _kill_leftover_consumers() -> Iterator[None]:
    """A failed test must not leave a consumer process behind."""
    yield
    while _cli_procs:
        proc = _cli_procs.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
