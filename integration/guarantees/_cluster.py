"""The suite's own three-broker cluster and Redis, run by the stack code in a run folder of their own."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from integration import _stack
from integration._kafka import Kafka, kafka_nodes
from integration._procs import alive, port_free, reap, wait_for
from integration._settings import REPO_ROOT, StackSettings
from integration.errors import StackError
from thimble.testing import free_port_run

BROKERS = 3
FIRST_KAFKA_PORT = 29292
FIRST_REDIS_PORT = 26579


class Cluster:
    """Three KRaft brokers and a Redis of a stack the suite controls; never the shared stack."""

    def __init__(self, settings: StackSettings, console: Console | None = None) -> None:
        # Restarting a killed broker runs the stack's `up`, which must not start Spark beside it.
        self.settings = dataclasses.replace(settings, spark=False)
        self.console = console or Console(quiet=True)
        self._restarts: list[threading.Thread] = []
        self._broker_lock = threading.Lock()
        self.restart_errors: list[str] = []

    @classmethod
    def on_free_ports(cls, run_dir: Path, console: Console | None = None) -> Cluster:
        """A cluster in ``run_dir`` on the first free loopback ports from 29292 (Kafka) and 26579 (Redis)."""
        jars = os.environ.get("THIMBLE_STACK_JARS_DIR") or str(
            Path(os.environ.get("THIMBLE_RUN_DIR") or REPO_ROOT / ".run") / "jars"
        )
        settings = StackSettings(
            run_dir=run_dir.resolve(),
            jars_dir=Path(jars).resolve(),
            kafka_port=free_port_run(FIRST_KAFKA_PORT, 2 * BROKERS, step=2, span=600),
            redis_port=free_port_run(FIRST_REDIS_PORT),
            kafka_brokers=BROKERS,
        )
        return cls(settings, console)

    @property
    def bootstrap(self) -> str:
        return self.settings.bootstrap_servers

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.settings.redis_port}/0"

    def up(self) -> None:
        _stack.up(self.settings, self.console)

    def down(self) -> None:
        self.wait_restarts()
        _stack.down(self.settings, self.console)

    def node(self, node_id: int) -> Kafka:
        return kafka_nodes(self.settings)[node_id - 1]

    def all_up(self) -> bool:
        return all(node.running_pid() is not None and node.healthy() for node in kafka_nodes(self.settings))

    def kill_and_restart(self, node_id: Callable[[], int | None], wait_s: float = 120.0) -> int | None:
        """SIGKILL the broker ``node_id()`` names once every broker is up, and start it again in the background.

        One broker at a time (scenarios may run side by side): a second kill waits for the first broker
        to be back, so two of three replicas stay in sync. Returns the node killed, None if none was.
        """
        with self._broker_lock:
            self.wait_restarts(wait_s)  # never kill a broker that a restart is still waiting for
            if not wait_for(self.all_up, wait_s, interval=0.5):
                return None
            chosen = node_id()
            pid = self.node(chosen).running_pid() if chosen is not None else None
            if chosen is None or pid is None:
                return None
            os.kill(pid, signal.SIGKILL)
            node = self.node(chosen)
            # A killed JVM lets go of its sockets only once its last thread has exited.
            wait_for(lambda: not alive(pid) and all(port_free(port) for port in node.ports), 30, interval=0.2)
            reap(pid)
            self.restart_later()
            return chosen

    def restart_later(self) -> None:
        """Bring every stopped broker back in the background (``up`` starts only those that are down)."""
        thread = threading.Thread(target=self._restart, name="broker-restart", daemon=True)
        thread.start()
        self._restarts.append(thread)

    def _restart(self, attempts: int = 3) -> None:
        for attempt in range(1, attempts + 1):
            try:
                _stack.up(self.settings, Console(quiet=True))
                return
            except StackError as exc:
                if attempt == attempts:
                    self.restart_errors.append(str(exc))

    def wait_restarts(self, timeout: float = 180.0) -> None:
        for thread in list(self._restarts):
            thread.join(timeout)
        self._restarts = [thread for thread in self._restarts if thread.is_alive()]
