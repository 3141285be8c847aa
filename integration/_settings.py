"""Where the stack keeps its files and which ports it uses, from the environment."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from integration.errors import StackError

REPO_ROOT = Path(__file__).resolve().parent.parent
POMS_DIR = Path(__file__).resolve().parent / "jars"
MAX_KAFKA_BROKERS = 9
BROKERS_FILE = "kafka-brokers"
MAX_SPARK_WORKERS = 8
SPARK_WORKERS_FILE = "spark-workers"


def _port(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        port = int(raw)
    except ValueError:
        raise StackError(f"{name}={raw!r} is not a port number") from None
    if not 1 <= port <= 65534:
        raise StackError(f"{name}={port} is out of range (1-65534)")
    return port


def check_broker_count(count: int, where: str) -> int:
    """``count`` if it is a broker count the stack can run (1 to MAX_KAFKA_BROKERS); else a StackError naming ``where``."""
    if not 1 <= count <= MAX_KAFKA_BROKERS:
        raise StackError(
            f"{where}={count} is out of range: the stack runs 1 to {MAX_KAFKA_BROKERS} Kafka brokers"
        )
    return count


def _broker_count(run_dir: Path) -> int:
    """``THIMBLE_STACK_KAFKA_BROKERS``, else the count a running stack in ``run_dir`` was started with, else 1."""
    raw = os.environ.get("THIMBLE_STACK_KAFKA_BROKERS")
    where = "THIMBLE_STACK_KAFKA_BROKERS"
    if raw is None or raw == "":
        remembered = run_dir / "conf" / BROKERS_FILE
        if not remembered.exists():
            return 1
        raw, where = remembered.read_text().strip(), str(remembered)
    try:
        return check_broker_count(int(raw), where)
    except ValueError:
        raise StackError(f"{where}={raw!r} is not a number of brokers") from None


def _switch(name: str) -> bool:
    """An on/off environment variable, on unless set to 0, false, no or off."""
    raw = os.environ.get(name, "").strip().lower()
    if raw in ("", "1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise StackError(f"{name}={raw!r} is neither on (1) nor off (0)")


def check_worker_count(count: int, where: str) -> int:
    """``count`` if the stack can run that many Spark workers (0 to MAX_SPARK_WORKERS); else a StackError."""
    if not 0 <= count <= MAX_SPARK_WORKERS:
        raise StackError(
            f"{where}={count} is out of range: the stack runs 0 to {MAX_SPARK_WORKERS} Spark workers"
        )
    return count


def _worker_count(run_dir: Path) -> int:
    """``THIMBLE_STACK_SPARK_WORKERS``, else the count a running stack in ``run_dir`` was started with, else 0."""
    raw = os.environ.get("THIMBLE_STACK_SPARK_WORKERS")
    where = "THIMBLE_STACK_SPARK_WORKERS"
    if raw is None or raw == "":
        remembered = run_dir / "conf" / SPARK_WORKERS_FILE
        if not remembered.exists():
            return 0
        raw, where = remembered.read_text().strip(), str(remembered)
    try:
        return check_worker_count(int(raw), where)
    except ValueError:
        raise StackError(f"{where}={raw!r} is not a number of workers") from None


@dataclass(frozen=True)
class StackSettings:
    """Every path and port of one stack; two stacks with different settings run side by side.

    Kafka node ``i`` (0-based) listens on ``kafka_port + 2*i`` and its KRaft controller on the next port.
    Spark's standalone master listens on ``spark_master_port``, its web UI on the next port, and worker
    ``n`` (1-based) on ``spark_master_port + 1 + n``.
    """

    run_dir: Path
    jars_dir: Path
    kafka_port: int
    redis_port: int
    kafka_brokers: int = 1
    spark_port: int = 15002
    spark_master_port: int = 7077
    spark_workers: int = 0
    spark: bool = True
    spark_warmup: bool = True

    @property
    def controller_port(self) -> int:
        """The (first) KRaft controller listens on the port after the (first) broker's."""
        return self.kafka_port + 1

    def broker_port(self, index: int) -> int:
        return self.kafka_port + 2 * index

    def broker_controller_port(self, index: int) -> int:
        return self.kafka_port + 2 * index + 1

    @property
    def kafka_ports(self) -> list[int]:
        """Every port of every Kafka node, brokers and controllers."""
        return [self.kafka_port + offset for offset in range(2 * self.kafka_brokers)]

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"127.0.0.1:{self.broker_port(i)}" for i in range(self.kafka_brokers))

    @property
    def spark_master_ui_port(self) -> int:
        return self.spark_master_port + 1

    def spark_worker_port(self, number: int) -> int:
        return self.spark_master_port + 1 + number

    @property
    def spark_master_url(self) -> str:
        return f"spark://127.0.0.1:{self.spark_master_port}"

    @property
    def spark_ports(self) -> list[int]:
        """The Connect server's port, and the master's and workers' when the stack runs a cluster."""
        if not self.spark:
            return []
        if not self.spark_workers:
            return [self.spark_port]
        cluster = range(self.spark_master_port, self.spark_worker_port(self.spark_workers) + 1)
        return [self.spark_port, *cluster]

    @property
    def spark_workers_file(self) -> Path:
        """Holds the Spark worker count while the stack runs, so that ``status``/``down`` need no flag."""
        return self.conf_dir / SPARK_WORKERS_FILE

    @property
    def brokers_file(self) -> Path:
        """Holds the broker count while the stack runs, so that ``status``/``down`` need no flag."""
        return self.conf_dir / BROKERS_FILE

    @property
    def logs_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def pids_dir(self) -> Path:
        return self.run_dir / "pids"

    @property
    def conf_dir(self) -> Path:
        return self.run_dir / "conf"

    @property
    def data_dir(self) -> Path:
        return self.run_dir / "data"

    @classmethod
    def from_env(cls, kafka_brokers: int | None = None, spark_workers: int | None = None) -> StackSettings:
        """``THIMBLE_RUN_DIR``, ``THIMBLE_STACK_JARS_DIR``, ``THIMBLE_STACK_KAFKA_PORT``, ``THIMBLE_STACK_REDIS_PORT``,
        ``THIMBLE_STACK_KAFKA_BROKERS`` (``kafka_brokers`` overrides it; default: what the running stack uses, else 1),
        ``THIMBLE_STACK_SPARK_PORT``, ``THIMBLE_STACK_SPARK_MASTER_PORT``, ``THIMBLE_STACK_SPARK_WORKERS``
        (``spark_workers`` overrides it; default: what the running stack uses, else 0), ``THIMBLE_STACK_SPARK``
        (0: a stack without Spark's services, as the stack's own tests run it), ``THIMBLE_STACK_SPARK_WARMUP``
        (0: no warm-up job after the Connect server starts).
        """
        run_dir = Path(os.environ.get("THIMBLE_RUN_DIR") or REPO_ROOT / ".run").resolve()
        jars_dir = Path(os.environ.get("THIMBLE_STACK_JARS_DIR") or run_dir / "jars").resolve()
        brokers = (
            check_broker_count(kafka_brokers, "--kafka-brokers")
            if kafka_brokers is not None
            else _broker_count(run_dir)
        )
        settings = cls(
            run_dir=run_dir,
            jars_dir=jars_dir,
            kafka_port=_port("THIMBLE_STACK_KAFKA_PORT", 9092),
            redis_port=_port("THIMBLE_STACK_REDIS_PORT", 6379),
            kafka_brokers=brokers,
            spark_port=_port("THIMBLE_STACK_SPARK_PORT", 15002),
            spark_master_port=_port("THIMBLE_STACK_SPARK_MASTER_PORT", 7077),
            spark_workers=(
                check_worker_count(spark_workers, "--spark-workers")
                if spark_workers is not None
                else _worker_count(run_dir)
            ),
            spark=_switch("THIMBLE_STACK_SPARK"),
            spark_warmup=_switch("THIMBLE_STACK_SPARK_WARMUP"),
        )
        settings.check_ports()
        return settings

    def check_ports(self) -> None:
        """Raise a StackError when Redis's port is one of Kafka's or Kafka's run past 65535."""
        last = self.kafka_ports[-1]
        if last > 65535:
            raise StackError(
                f"{self.kafka_brokers} Kafka brokers from port {self.kafka_port} need ports up to {last}, past 65535"
            )
        if self.redis_port in self.kafka_ports:
            raise StackError(
                f"Redis port {self.redis_port} collides with Kafka's ports {'/'.join(map(str, self.kafka_ports))}"
            )
        if self.spark_ports and self.spark_ports[-1] > 65535:
            raise StackError(f"Spark's ports from {self.spark_master_port} run past 65535")
        clash = sorted(set(self.spark_ports) & {*self.kafka_ports, self.redis_port})
        if clash or len(set(self.spark_ports)) < len(self.spark_ports):
            raise StackError(
                f"Spark's ports {'/'.join(map(str, self.spark_ports))} collide with each other or with "
                "Kafka's or Redis's: choose others with THIMBLE_STACK_SPARK_PORT or THIMBLE_STACK_SPARK_MASTER_PORT"
            )


def find_java() -> str:
    """The ``java`` of Java 17: ``JAVA_HOME``, else a JDK 17 under /usr/lib/jvm, else ``java`` on PATH."""
    home = os.environ.get("JAVA_HOME")
    candidates = [Path(home)] if home else []
    candidates += (
        sorted(Path("/usr/lib/jvm").glob("java-17-openjdk*")) if Path("/usr/lib/jvm").is_dir() else []
    )
    for candidate in candidates:
        java = candidate / "bin" / "java"
        if java.is_file() and os.access(java, os.X_OK):
            return str(java)
    on_path = shutil.which("java")
    if on_path:
        return on_path
    raise StackError(
        "Java 17 is required for the Kafka broker; set JAVA_HOME or install openjdk-17-jre-headless"
    )
