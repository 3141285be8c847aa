"""Bring the stack's services up, check them and take them down: idempotent, one command at a time."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console

from integration import _jars
from integration._kafka import Kafka, kafka_nodes
from integration._procs import (
    PROC,
    alive,
    cmdline,
    describe_taken,
    first_errors,
    port_free,
    reap,
    start_detached,
    stop,
    tail,
    wait_for,
)
from integration._redis import Redis
from integration._service import Service, State, Status
from integration._settings import StackSettings
from integration._spark import SparkConnect, spark_services
from integration.errors import PortTakenError, ServiceFailedError, StackError

LOCK_TIMEOUT_S = 300.0
LOG_ROTATE_BYTES = 50 * 1024 * 1024


def services(settings: StackSettings) -> list[Service]:
    """The stack's services in start order: the Kafka node(s), Redis, then Spark's (see ``_spark``)."""
    return [*kafka_nodes(settings), Redis(settings), *spark_services(settings)]


def services_named(settings: StackSettings, name: str) -> list[Service]:
    """The service called ``name``; ``kafka`` also names every node of a cluster (``kafka-1`` …)."""
    chosen = [s for s in services(settings) if s.name == name or s.name.startswith(f"{name}-")]
    if chosen:
        return chosen
    known = ", ".join(s.name for s in services(settings))
    raise StackError(f"unknown service {name!r}; the stack has: {known}")


def _other_kafka_layout(settings: StackSettings) -> list[str]:
    """Kafka nodes running in this run folder under a broker count other than ``settings.kafka_brokers``."""
    ours = {node.name for node in kafka_nodes(settings)}
    others = []
    for pid_path in sorted(settings.pids_dir.glob("kafka*.pid")):
        name = pid_path.stem
        number = name.removeprefix("kafka-")
        if name in ours or not (name == "kafka" or number.isdigit()):
            continue
        if name == "kafka":
            node = Kafka(dataclasses.replace(settings, kafka_brokers=1))
        else:
            node = Kafka(dataclasses.replace(settings, kafka_brokers=max(int(number), 2)), int(number) - 1)
        if node.running_pid() is not None:
            others.append(name)
    return others


@contextlib.contextmanager
def locked(settings: StackSettings, console: Console) -> Iterator[None]:
    """Hold the run folder's lock, so two ``up``/``down`` never interleave."""
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.run_dir / ".stack.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            console.print("[dim]another stack command is running in this run folder; waiting for it…[/]")

            def acquired() -> bool:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False
                return True

            if not wait_for(acquired, LOCK_TIMEOUT_S, interval=0.2):
                raise StackError(
                    f"another stack command held {settings.run_dir / '.stack.lock'} for too long"
                ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _orphan(service: Service) -> int | None:
    """A process of this service that no pid file points to (its pid file was lost)."""
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            line = cmdline(int(entry.name))
            if line and service.marker in line and int(entry.name) != os.getpid():
                return int(entry.name)
    return None


def find_pid(service: Service, console: Console | None = None) -> int | None:
    """The service's live pid; a stale pid file is removed and a lost one rewritten."""
    pid = service.running_pid()
    if pid is not None:
        return pid
    entry = service.pid_file.read()
    if entry is not None or service.pid_file.path.exists():
        if entry is None:
            why = "it was unreadable"
        elif alive(entry[0]):
            why = f"pid {entry[0]} is now another program"
        else:
            why = "its process is gone"
        service.pid_file.remove()
        if console:
            console.print(f"[yellow]{service.name}: removed a stale pid file ({why})[/]")
    orphan = _orphan(service)
    if orphan is not None:
        service.pid_file.write(orphan)
        if console:
            console.print(
                f"[yellow]{service.name}: found its process (pid {orphan}) without a pid file; adopted it[/]"
            )
    return orphan


_START_MARK = "--- "


def _failure(service: Service, what: str) -> ServiceFailedError:
    errors = first_errors(service.log_path, since=_START_MARK)
    cause = f"First errors it logged:\n{errors}\n" if errors else ""
    log_tail = tail(service.log_path, lines=25 if errors else 40)
    return ServiceFailedError(
        f"{service.name} {what}. {cause}Last lines of {service.log_path}:\n{log_tail or '(the log is empty)'}"
    )


def _wait_ready(service: Service, pid: int) -> None:
    answered = wait_for(lambda: not alive(pid) or service.healthy(), service.ready_timeout, interval=0.2)
    if not alive(pid):
        reap(pid)
        service.pid_file.remove()
        raise _failure(service, "exited while starting")
    if not answered:
        raise _failure(service, f"did not answer within {service.ready_timeout:.0f}s")


def _rotate(log: Path) -> None:
    """Keep one previous log (``<name>.log.1``) once a log passes LOG_ROTATE_BYTES."""
    if log.exists() and log.stat().st_size > LOG_ROTATE_BYTES:
        log.replace(log.with_name(log.name + ".1"))


def _start(service: Service, console: Console) -> int:
    service.prepare()
    argv = service.argv()
    service.log_path.parent.mkdir(parents=True, exist_ok=True)
    _rotate(service.log_path)
    with open(service.log_path, "a") as log:
        log.write(
            f"{_START_MARK}{dt.datetime.now(dt.UTC).isoformat(timespec='seconds')} starting: {' '.join(argv)}\n"
        )
    pid = start_detached(argv, service.log_path, cwd=service.settings.run_dir, env=service.environment())
    service.pid_file.write(pid)
    console.print(f"{service.name}: started (pid {pid}), waiting until it answers on {service.address}…")
    return pid


def up(settings: StackSettings, console: Console, settle: bool = False) -> None:
    """Start every service that is not running and wait until each answers a real request; with ``settle``,
    also until what a start began in the background (the Connect server's warm-up) has finished."""
    with locked(settings, console):
        for folder in (settings.logs_dir, settings.pids_dir, settings.conf_dir, settings.data_dir):
            folder.mkdir(parents=True, exist_ok=True)
        others = _other_kafka_layout(settings)
        if others:
            raise StackError(
                f"the stack in {settings.run_dir} runs Kafka as {', '.join(others)}, not "
                f"{settings.kafka_brokers} broker(s); run `down` first to change the number of brokers"
            )
        _check_spark_layout(settings)
        running = {service.name: find_pid(service, console) for service in services(settings)}
        needed = [port for s in services(settings) if running[s.name] is None for port in s.ports]
        taken = describe_taken([port for port in needed if not port_free(port)])
        if taken:
            raise PortTakenError(
                "cannot start the stack, nothing was started:\n"
                + "".join(f"  {sentence}\n" for sentence in taken)
                + "Stop that program, or choose other ports with THIMBLE_STACK_KAFKA_PORT "
                "(Kafka's controller takes the next port, each further broker two more), THIMBLE_STACK_REDIS_PORT, "
                "THIMBLE_STACK_SPARK_PORT (Spark Connect) and THIMBLE_STACK_SPARK_MASTER_PORT (the master's web UI "
                "takes the next port, each worker one more)."
            )
        settings.brokers_file.write_text(f"{settings.kafka_brokers}\n")
        if settings.spark:
            settings.spark_workers_file.write_text(f"{settings.spark_workers}\n")
        kafka_down = any(running[node.name] is None for node in kafka_nodes(settings))
        if kafka_down and not _jars.present(settings, "kafka"):
            console.print(f"kafka: no jars in {settings.jars_dir / 'kafka'} yet; resolving them with Maven…")
            _jars.resolve(settings, "kafka")
        spark_down = any(running[service.name] is None for service in spark_services(settings))
        if spark_down and not any("delta-spark" in jar.name for jar in _jars.present(settings, "spark")):
            console.print(f"spark: no jars in {settings.jars_dir / 'spark'} yet; resolving them with Maven…")
            _jars.resolve(settings, "spark")
        started: dict[str, int] = {}
        try:
            for service in services(settings):
                if running[service.name] is None:
                    started[service.name] = _start(service, console)
            for service in services(settings):
                t0 = time.monotonic()
                pid = started.get(service.name) or running[service.name]
                assert pid is not None
                if service.name not in started and service.healthy():
                    console.print(f"[green]{service.name}: already up[/] (pid {pid}) on {service.address}")
                    continue
                _wait_ready(service, pid)
                verb = "up" if service.name in started else "up (it was still starting)"
                console.print(
                    f"[green]{service.name}: {verb}[/] (pid {pid}) on {service.address} in {time.monotonic() - t0:.1f}s"
                )
                background = service.after_start() if service.name in started else None
                if background:
                    console.print(f"{service.name}: {background}")
        except BaseException:
            for service in reversed(services(settings)):
                pid = started.get(service.name)
                if pid is not None and alive(pid):
                    console.print(f"{service.name}: stopping it again (pid {pid}), so no half stack is left")
                    stop(pid, service.stop_timeout)
                    reap(pid)
                    service.pid_file.remove()
            raise
        if not started:
            console.print("[green]the stack was already up; nothing to do[/]")
    if settle:
        for service in services(settings):
            t0 = time.monotonic()
            done = service.settle()
            if done:
                console.print(f"{service.name}: {done} (waited {time.monotonic() - t0:.1f}s)")


def _stop_one(service: Service, pid: int) -> str:
    t0 = time.monotonic()
    clean = stop(pid, service.stop_timeout)
    reap(pid)
    if alive(pid):
        raise ServiceFailedError(f"{service.name} (pid {pid}) is still running after SIGKILL")
    service.pid_file.remove()
    how = "stopped" if clean else f"killed (it ignored SIGTERM for {service.stop_timeout:.0f}s)"
    return f"{service.name}: {how} (pid {pid}) in {time.monotonic() - t0:.1f}s"


def _check_spark_layout(settings: StackSettings) -> None:
    """Refuse to change the number of Spark workers under a running Connect server."""
    server = SparkConnect(settings)
    if not settings.spark or server.running_pid() is None or not settings.spark_workers_file.exists():
        return
    running = settings.spark_workers_file.read_text().strip()
    if running != str(settings.spark_workers):
        raise StackError(
            f"the stack in {settings.run_dir} runs Spark with {running} worker(s), not {settings.spark_workers}; "
            "run `down spark` first to change the number of workers (Kafka and Redis keep running)"
        )


def down(settings: StackSettings, console: Console, only: str | None = None) -> None:
    """Stop every service, or only those named ``only`` (SIGTERM, then SIGKILL after its bound).

    A no-op when nothing runs. Spark's Connect server first, then its master and workers, then Redis,
    then every Kafka node at once: a cluster's last node stopped alone would wait for a controller
    quorum that is already gone.
    """
    chosen = {service.name for service in services_named(settings, only)} if only else None
    spark = spark_services(settings)
    groups: list[list[Service]] = [spark[-1:], spark[:-1], [Redis(settings)], [*kafka_nodes(settings)]]
    with locked(settings, console):
        for group in groups:
            running = []
            for service in group:
                if chosen is not None and service.name not in chosen:
                    continue
                pid = find_pid(service, console)
                if pid is None:
                    console.print(f"{service.name}: not running")
                else:
                    running.append((service, pid))
            if running:
                with ThreadPoolExecutor(len(running)) as pool:
                    for line in pool.map(lambda entry: _stop_one(*entry), running):
                        console.print(line)
        if chosen is None or any(node.name in chosen for node in kafka_nodes(settings)):
            settings.brokers_file.unlink(missing_ok=True)
        if chosen is None or any(service.name in chosen for service in spark):
            settings.spark_workers_file.unlink(missing_ok=True)


def service_status(service: Service) -> Status:
    pid = service.running_pid()
    if pid is not None:
        if service.healthy():
            return Status(service.name, State.UP, pid, service.address)
        return Status(service.name, State.STARTING, pid, service.address, "running but not answering yet")
    details = []
    if service.pid_file.path.exists():
        details.append("stale pid file")
    details += describe_taken([port for port in service.ports if not port_free(port)])
    return Status(service.name, State.DOWN, None, service.address, "; ".join(details))


def statuses(settings: StackSettings) -> list[Status]:
    return [service_status(s) for s in services(settings)]


def log_paths(settings: StackSettings, name: str | None) -> list[tuple[str, Path]]:
    chosen = services_named(settings, name) if name else services(settings)
    return [(service.name, service.log_path) for service in chosen]
