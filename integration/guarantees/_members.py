"""``thimble-consumer run`` processes of one group: start, find their workers, kill, stop, clean up."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from integration._procs import PROC, alive, cmdline, start_time, wait_for
from integration._settings import REPO_ROOT

APP_REF = "integration.guarantees._app:app"


def children(pid: int) -> list[int]:
    """Live children of ``pid`` (read from /proc)."""
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def consumer_cli() -> str:
    return str(Path(sys.executable).with_name("thimble-consumer"))


@dataclass
class Member:
    """One ``thimble-consumer run`` (a supervisor when ``workers`` > 1) and the workers it started."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    workers_seen: dict[int, int | None] = field(default_factory=dict)  # pid: start time

    @property
    def pid(self) -> int:
        return self.proc.pid

    def workers(self) -> list[int]:
        """The worker processes running now (the supervisor's children, not multiprocessing's helper)."""
        found = [p for p in children(self.pid) if "resource_tracker" not in (cmdline(p) or "")]
        self.workers_seen.update({pid: start_time(pid) for pid in found if pid not in self.workers_seen})
        return found

    def running(self) -> bool:
        return self.proc.poll() is None

    def log_count(self, text: str) -> int:
        try:
            return self.log_path.read_text(errors="replace").count(text)
        except FileNotFoundError:
            return 0

    def log_lines(self, text: str, before: int = 0) -> list[str]:
        """The lines of this member's log holding ``text``, each after the ``before`` lines preceding it."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []
        found = []
        for i, line in enumerate(lines):
            if text in line:
                found.append("\n".join(lines[max(0, i - before) : i + 1]))
        return found


@dataclass
class Group:
    """The members of one consumer group in one scenario, and every process they ever had."""

    config: Path
    env: dict[str, str]
    logs_dir: Path
    members: list[Member] = field(default_factory=list)
    started: int = 0

    def start(self, workers: int) -> Member:
        self.started += 1
        name = f"member-{self.started}"
        log_path = self.logs_dir / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = [consumer_cli(), "run", APP_REF, "--workers", str(workers), "--config", str(self.config)]
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                argv,
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        member = Member(name, proc, log_path)
        self.members.append(member)
        return member

    def live(self) -> list[Member]:
        return [m for m in self.members if m.running()]

    def stop(self, member: Member, timeout: float = 60.0) -> int | None:
        """SIGTERM: the member drains, commits and leaves the group; SIGKILL after ``timeout``."""
        with contextlib.suppress(ProcessLookupError):
            member.proc.send_signal(signal.SIGTERM)
        try:
            return member.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            member.proc.kill()
            member.proc.wait(10)
            return None

    def kill_all(self) -> None:
        """Last resort: SIGKILL every process this group ever started that still runs."""
        for member in self.members:
            member.workers()
            if member.running():
                member.proc.kill()
            for pid, started in member.workers_seen.items():
                if alive(pid) and start_time(pid) == started:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                member.proc.wait(10)
        wait_for(lambda: not self.leftovers(), 10)

    def leftovers(self) -> list[int]:
        """Workers still running whose supervisor is gone."""
        return [
            pid
            for member in self.members
            if not member.running()
            for pid, started in member.workers_seen.items()
            if alive(pid) and start_time(pid) == started
        ]
