"""Where the stack keeps its files and which ports it uses, from the environment."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from integration.errors import StackError

REPO_ROOT = Path(__file__).resolve().parent.parent
POMS_DIR = Path(__file__).resolve().parent / "jars"


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


@dataclass(frozen=True)
class StackSettings:
    """Every path and port of one stack; two stacks with different settings run side by side."""

    run_dir: Path
    jars_dir: Path
    kafka_port: int
    redis_port: int

    @property
    def controller_port(self) -> int:
        """The KRaft controller listens on the port after the broker's."""
        return self.kafka_port + 1

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
    def from_env(cls) -> StackSettings:
        """``THIMBLE_RUN_DIR``, ``THIMBLE_STACK_JARS_DIR``, ``THIMBLE_STACK_KAFKA_PORT``, ``THIMBLE_STACK_REDIS_PORT``."""
        run_dir = Path(os.environ.get("THIMBLE_RUN_DIR") or REPO_ROOT / ".run").resolve()
        jars_dir = Path(os.environ.get("THIMBLE_STACK_JARS_DIR") or run_dir / "jars").resolve()
        settings = cls(
            run_dir=run_dir,
            jars_dir=jars_dir,
            kafka_port=_port("THIMBLE_STACK_KAFKA_PORT", 9092),
            redis_port=_port("THIMBLE_STACK_REDIS_PORT", 6379),
        )
        if settings.redis_port in (settings.kafka_port, settings.controller_port):
            raise StackError(
                f"Redis port {settings.redis_port} collides with Kafka's ports "
                f"{settings.kafka_port}/{settings.controller_port}"
            )
        return settings


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
