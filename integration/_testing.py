"""Helpers for the stack's own tests: drive ``integration/stack.py`` in a subprocess with its own run folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from integration._procs import cmdline
from integration._settings import REPO_ROOT as REPO
from thimble.testing import free_port_run

STACK = REPO / "integration" / "stack.py"


def main_jars_dir() -> Path:
    """The main stack's jars, shared so that the tests never run Maven again."""
    explicit = os.environ.get("THIMBLE_STACK_JARS_DIR")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("THIMBLE_RUN_DIR") or REPO / ".run") / "jars"


@dataclass
class Stack:
    """A stack run through ``integration/stack.py`` in a subprocess, with its own run folder and ports."""

    run_dir: Path
    kafka_port: int
    redis_port: int
    seen_pids: set[int] = field(default_factory=set)
    spark: bool = False
    spark_port: int = 15002
    spark_master_port: int = 7077

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "THIMBLE_RUN_DIR": str(self.run_dir),
            "THIMBLE_STACK_JARS_DIR": str(main_jars_dir()),
            "THIMBLE_STACK_KAFKA_PORT": str(self.kafka_port),
            "THIMBLE_STACK_REDIS_PORT": str(self.redis_port),
            # Kafka's and Redis's own tests: Spark's services have tests of their own (spark=True).
            "THIMBLE_STACK_SPARK": "1" if self.spark else "0",
            "THIMBLE_STACK_SPARK_WARMUP": "0",
            "THIMBLE_STACK_SPARK_PORT": str(self.spark_port),
            "THIMBLE_STACK_SPARK_MASTER_PORT": str(self.spark_master_port),
            "COLUMNS": "250",
        }

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def ports(self) -> list[int]:
        return [self.kafka_port, self.kafka_port + 1, self.redis_port]

    def run(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, str(STACK), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        self.seen_pids.update(self.pids().values())
        return result

    def pid_file(self, service: str) -> Path:
        return self.run_dir / "pids" / f"{service}.pid"

    def pids(self) -> dict[str, int]:
        """The pids the stack's pid files name now (``kafka-1`` … for a cluster)."""
        return {
            path.stem: int(path.read_text().split()[0])
            for path in sorted((self.run_dir / "pids").glob("*.pid"))
            if path.read_text().split()
        }

    def kill_leftovers(self) -> None:
        """Last resort after a failed test: no process of this stack survives the test run."""
        for pid in self.seen_pids:
            line = cmdline(pid)
            if line and str(self.run_dir) in line:
                os.kill(pid, signal.SIGKILL)


def cluster_stack(run_dir: Path, brokers: int = 3) -> Stack:
    """A stack for ``up --kafka-brokers N``: 2N consecutive free ports for Kafka, one for Redis.

    The ports lie below the kernel's ephemeral range (32768 and up), where an outgoing connection made while
    the brokers start (one broker dialling another's controller) could take a port a later broker must bind.
    """
    kafka_port = free_port_run(29092, 2 * brokers, step=2, span=400)
    return Stack(run_dir=run_dir, kafka_port=kafka_port, redis_port=free_port_run(18379))


def make_stack(run_dir: Path, redis_start: int = 16379) -> Stack:
    """A one-broker stack: a pair of free ports for Kafka and its controller, one for Redis."""
    kafka_port = free_port_run(19092, 2, step=2)
    return Stack(run_dir=run_dir, kafka_port=kafka_port, redis_port=free_port_run(redis_start))
