"""``--workers N``: N consumer processes in one group, restarted with backoff if one dies.

A worker stopped by a user error (a bad setting, a missing topic, a metrics port in use) would fail the
same way again: it hands its message to the supervisor, which stops the other workers and reports it once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import sys
import threading
import time
from multiprocessing.process import BaseProcess
from multiprocessing.queues import SimpleQueue
from pathlib import Path
from typing import Any

from thimble.common.config import load_settings
from thimble.common.errors import ServiceUnavailableError, ThimbleError
from thimble.common.logging import configure_logging, get_logger
from thimble.consumer import _log_context as log_context
from thimble.consumer.__about__ import __version__
from thimble.consumer._loader import load_app
from thimble.consumer._runner import CLOSE_BOUND_S, Runner
from thimble.consumer.config import ConsumerSettings
from thimble.consumer.errors import ConsumerError

log = get_logger(__name__)

PR_SET_PDEATHSIG = 1
ORPHAN_CHECK_S = 0.5
USER_ERROR = ThimbleError.exit_code  # a worker's exit code that no restart can fix


def _ask_kernel_for_death_signal() -> bool:
    """Linux: have the kernel send SIGTERM to this process when the process that started it dies."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        return bool(libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def die_with_parent(parent_pid: int, grace_s: float) -> None:
    """End this worker when its supervisor ``parent_pid`` is gone, even after ``kill -9`` of it.

    SIGTERM first (the worker drains and commits); if it is still alive ``grace_s`` later, exit at once.
    A watchdog thread that notices the new parent sends the SIGTERM where the kernel cannot.
    """
    kernel_signals = _ask_kernel_for_death_signal() and os.getppid() == parent_pid

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(ORPHAN_CHECK_S)
        log.warning("supervisor is gone; stopping this worker", extra={"supervisor_pid": parent_pid})
        if not kernel_signals:
            os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        os._exit(1)

    threading.Thread(target=watch, name="thimble-supervisor-watchdog", daemon=True).start()


def _worker_main(
    app_ref: str,
    config_file: str | None,
    overrides: dict[str, Any],
    index: int,
    parent_pid: int,
    user_errors: SimpleQueue[str],
) -> None:
    settings = load_settings(ConsumerSettings, config_file, overrides)
    die_with_parent(parent_pid, settings.consumer.drain_timeout_s + CLOSE_BOUND_S + 5)
    configure_logging("consumer", __version__, settings.logging.level, settings.logging.format)
    log_context.tag_worker(index)
    try:
        code = Runner(load_app(app_ref), settings, worker_index=index).run()
    except ServiceUnavailableError as exc:
        log.error(str(exc))
        code = 1  # a service that did not answer may answer a restarted worker
    except ThimbleError as exc:
        if exc.exit_code == USER_ERROR:
            user_errors.put(str(exc))  # the supervisor reports it, once
        else:
            log.error(str(exc))
        code = exc.exit_code
    raise SystemExit(code)


def run_workers(
    app_ref: str, workers: int, config_file: str | Path | None, overrides: dict[str, Any], drain_s: float
) -> int:
    """Run and supervise ``workers`` processes; forward SIGTERM/SIGINT; return the worst exit code.

    A worker exiting with a user error stops the others; its message is raised as a :class:`ConsumerError`.
    """
    ctx = multiprocessing.get_context("spawn")
    user_errors: SimpleQueue[str] = ctx.SimpleQueue()
    user_error: str | None = None
    stopping = False
    procs: dict[int, BaseProcess] = {}
    backoff: dict[int, float] = {}
    next_start: dict[int, float] = {}
    codes: dict[int, int] = {}
    cfg = str(config_file) if config_file is not None else None

    def start(index: int) -> None:
        proc = ctx.Process(
            target=_worker_main,
            args=(app_ref, cfg, overrides, index, os.getpid(), user_errors),
            name=f"thimble-worker-{index}",
        )
        proc.start()
        procs[index] = proc
        log.info("worker started", extra={"worker": index, "pid": proc.pid})

    def stop_all() -> None:
        nonlocal stopping
        stopping = True
        for proc in procs.values():
            if proc.is_alive() and proc.pid is not None:
                proc.terminate()  # SIGTERM: each worker drains and commits

    def on_signal(signum: int, _frame: Any) -> None:
        stop_all()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for i in range(workers):
        start(i)
    while True:
        alive = False
        for index, proc in list(procs.items()):
            if proc.is_alive():
                alive = True
                continue
            code = proc.exitcode if proc.exitcode is not None else 1
            if code == USER_ERROR and not stopping:
                user_error = user_errors.get() if not user_errors.empty() else None
                user_error = user_error or f"worker {index} stopped on a user error (exit code {code})"
                log.info("a worker stopped on a user error; stopping the others", extra={"worker": index})
                stop_all()
            if stopping or code == 0:
                codes[index] = code
                continue
            now = time.monotonic()
            if index not in next_start:
                delay = backoff[index] = min(backoff.get(index, 0.5) * 2, 30.0)
                next_start[index] = now + delay
                log.warning(
                    "worker exited; restarting",
                    extra={"worker": index, "exit_code": code, "restart_in_s": delay},
                )
                alive = True
            elif now >= next_start[index]:
                del next_start[index]
                start(index)
                alive = True
            else:
                alive = True
        if not alive or (stopping and all(not p.is_alive() for p in procs.values())):
            break
        time.sleep(0.2)
    for proc in procs.values():
        proc.join(timeout=drain_s + 5)
        if proc.is_alive():
            proc.kill()
    if user_error is not None:
        raise ConsumerError(user_error)
    return max((c if c >= 0 else 1) for c in [*codes.values(), 0])
