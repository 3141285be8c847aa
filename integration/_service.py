"""What the stack needs to know about one long-running service: how to start it, find it and check it."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from integration._procs import PidFile, cmdline, start_time
from integration._settings import StackSettings


class State(StrEnum):
    UP = "up"
    STARTING = "starting"
    DOWN = "down"


@dataclass(frozen=True)
class Status:
    """One service as ``status`` shows it."""

    name: str
    state: State
    pid: int | None
    address: str
    detail: str = ""


class Service(abc.ABC):
    """A service run as a detached child with a pid file and a log file under the run folder."""

    name: str
    ready_timeout: float = 90.0
    stop_timeout: float = 30.0

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings

    @property
    def pid_file(self) -> PidFile:
        return PidFile(self.settings.pids_dir / f"{self.name}.pid")

    @property
    def log_path(self) -> Path:
        return self.settings.logs_dir / f"{self.name}.log"

    @property
    @abc.abstractmethod
    def ports(self) -> list[int]:
        """Every TCP port the service listens on."""

    @property
    @abc.abstractmethod
    def address(self) -> str:
        """Where clients connect, e.g. ``127.0.0.1:9092``."""

    @property
    @abc.abstractmethod
    def marker(self) -> str:
        """A string found in the service's command line and in no other program's (its config file path)."""

    @abc.abstractmethod
    def prepare(self) -> None:
        """Write config files and initialise storage; called before every start."""

    @abc.abstractmethod
    def argv(self) -> list[str]:
        """The command that runs the service in the foreground."""

    @abc.abstractmethod
    def healthy(self) -> bool:
        """One real request to the service succeeded (a short timeout; never raises)."""

    def environment(self) -> dict[str, str] | None:
        """The environment the service starts with; None: this process's."""
        return None

    def after_start(self) -> str | None:
        """Called once a start of the service answered; what it began in the background, said to the user."""
        return None

    def settle(self) -> str | None:
        """Wait until what ``after_start`` began in the background has finished; what it did, or None."""
        return None

    def owns(self, pid: int, started: int | None = None) -> bool:
        """Whether ``pid`` is this service's process (and not a process that reused its pid)."""
        line = cmdline(pid)
        if line is None or self.marker not in line:
            return False
        return started is None or start_time(pid) == started

    def running_pid(self) -> int | None:
        """The pid from the pid file if that process is this service; None otherwise."""
        entry = self.pid_file.read()
        if entry is None:
            return None
        pid, started = entry
        return pid if self.owns(pid, started) else None
