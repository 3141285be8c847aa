"""Processes and ports on this machine, read from /proc: who owns a pid file, who listens on a port."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


def cmdline(pid: int) -> str | None:
    """The command line of a live (not zombie) process, or None when there is no such process."""
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
        stat = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    if stat[stat.rindex(")") + 2 :].startswith("Z"):
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def start_time(pid: int) -> int | None:
    """The process start time in clock ticks since boot (field 22 of /proc/<pid>/stat): pid reuse changes it."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def alive(pid: int) -> bool:
    return cmdline(pid) is not None


@dataclass(frozen=True)
class PidFile:
    """A pid file holding ``<pid> <start time>``; the start time tells a live process from a reused pid."""

    path: Path

    def write(self, pid: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(f"{pid} {start_time(pid) or 0}\n")
        tmp.replace(self.path)

    def read(self) -> tuple[int, int | None] | None:
        """``(pid, start time or None)``, or None when the file is missing or unreadable."""
        try:
            fields = self.path.read_text().split()
            return int(fields[0]), (int(fields[1]) if len(fields) > 1 and fields[1] != "0" else None)
        except (FileNotFoundError, ValueError, IndexError):
            return None

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def listening_pids(port: int) -> dict[int, str]:
    """Processes with a TCP socket listening on ``port`` (any address), as ``{pid: cmdline}``."""
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{inode}]")
    owners: dict[int, str] = {}
    if not inodes:
        return owners
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        owners[int(entry.name)] = cmdline(int(entry.name)) or "?"
                        break
    return owners


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could bind ``host:port`` now (a socket in TIME_WAIT does not count as taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


def describe_taken(ports: Sequence[int]) -> list[str]:
    """One sentence per owner of the taken ``ports``: ``port 9092 is taken by pid 123 (java … kafka.Kafka …)``.

    Ports are grouped by the process holding them; a port /proc cannot attribute (another user's process
    without root) is reported as "in use by another program".
    """
    by_owner: dict[tuple[int, str] | None, list[int]] = {}
    for port in ports:
        owners = listening_pids(port)
        keys: list[tuple[int, str] | None] = list(owners.items()) or [None]
        for key in keys:
            by_owner.setdefault(key, []).append(port)
    sentences = []
    for owner, owned in by_owner.items():
        which = f"port {owned[0]} is" if len(owned) == 1 else f"ports {', '.join(map(str, owned))} are"
        if owner is None:
            sentences.append(f"{which} in use by another program")
        else:
            sentences.append(f"{which} taken by pid {owner[0]} ({_summary(owner[1])})")
    return sentences


_THIMBLE_SERVICE = re.compile(
    r"(?P<run>\S+)/conf/(?:kafka(?:-\d+)?/server\.properties|redis\.conf|spark/spark[\w-]*\.conf)"
)


def _summary(line: str, limit: int = 100) -> str:
    """A command line short enough to read: a Thimble stack says so, a long one keeps its program and its end."""
    ours = _THIMBLE_SERVICE.search(line)
    if ours:
        return f"the Thimble stack in {ours.group('run')}"
    if len(line) <= limit:
        return line
    argv = line.split()
    short = f"{Path(argv[0]).name} … {' '.join(argv[-2:])}"
    return short if len(short) <= limit else short[: limit - 1] + "…"


def start_detached(argv: Sequence[str], log_path: Path, cwd: Path, env: dict[str, str] | None = None) -> int:
    """Start ``argv`` in its own session, stdout and stderr appended to ``log_path``; return its pid."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    # The child outlives this process; keep Popen's destructor from warning that it still runs.
    proc.returncode = 0
    return proc.pid


def wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass; return whether it held."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def _signal(pid: int, sig: signal.Signals) -> None:
    # The services lead their own session (start_new_session), so the whole group gets the signal.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def stop(pid: int, timeout: float) -> bool:
    """SIGTERM ``pid``, wait up to ``timeout`` seconds for it to exit, then SIGKILL. True if it exited on its own."""
    _signal(pid, signal.SIGTERM)
    if wait_for(lambda: not alive(pid), timeout):
        return True
    _signal(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid), 10)
    return False


def reap(pid: int) -> None:
    """Collect the exit status of ``pid`` if it is our own child (so it does not stay a zombie)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _last_lines(path: Path) -> list[str]:
    """The lines of the last 256 KiB of a text file (none when it does not exist)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 256 * 1024))
            data = handle.read()
    except FileNotFoundError:
        return []
    return data.decode(errors="replace").splitlines()


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a text file ('' when it does not exist)."""
    return "\n".join(_last_lines(path)[-lines:])


_ERROR_LINE = re.compile(r"\b(ERROR|FATAL)\b|^[\w.$]+(Exception|Error)\b")


def first_errors(path: Path, since: str, lines: int = 10) -> str:
    """The first ``lines`` error lines (an ERROR or FATAL record, or an exception's first line) written to a
    log after its last line starting with ``since`` ('' when there are none).

    A service that dies while starting logs its cause early and then pages of shutdown; this finds the cause.
    """
    logged = _last_lines(path)
    start = max((n for n, line in enumerate(logged) if line.startswith(since)), default=-1) + 1
    return "\n".join([line for line in logged[start:] if _ERROR_LINE.search(line)][:lines])
