"""What the flow needs from its surroundings: the stack's services, ports, subprocesses, Kafka offsets."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from integration.flow.errors import FlowError
from thimble.common.config import ThimbleSettings

REPO = Path(__file__).resolve().parents[2]


def check_stack(settings: ThimbleSettings) -> dict[str, str]:
    """Kafka answers a metadata request, Redis a PING, and Spark's jars are in place; else a clear error."""
    import redis
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    from thimble.common.spark import local_jars

    hint = "start the stack with `./dev stack up`"
    servers = settings.kafka.bootstrap_servers
    try:
        brokers = (
            AdminClient({**settings.kafka.client_config(), "log_level": 0}).list_topics(timeout=10).brokers
        )
    except KafkaException:
        raise FlowError(f"Kafka at {servers} did not answer; {hint}") from None
    client = redis.Redis.from_url(settings.online_store.url, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise FlowError(f"Redis at {settings.online_store.url} did not answer ({exc}); {hint}") from None
    finally:
        client.close()
    spark = (
        f"Spark Connect {settings.spark.remote}"
        if settings.spark.remote
        else f"{settings.spark.master}, {len(local_jars(settings))} jars"
    )
    return {
        "kafka": f"{servers} ({len(brokers)} broker{'s' if len(brokers) != 1 else ''})",
        "redis": settings.online_store.url,
        "spark": spark,
    }


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """``url`` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status) == 200
    except OSError:
        return False


def wait_for(
    condition: Callable[[], Any], timeout: float, what: str, alive: Callable[[], None] | None = None
) -> Any:
    """Poll ``condition`` until truthy; ``alive`` raises when what we wait on has died; FlowError on timeout."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        if alive is not None:
            alive()
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise FlowError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


class Process:
    """A CLI run in the background, its output in a log file, stopped with SIGTERM (then SIGKILL)."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str]) -> None:
        self.name = name
        self.argv = argv
        self.log = log
        self._terminated = False
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            self.popen = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}, cwd=REPO,
                start_new_session=True,
            )  # fmt: skip

    def check_alive(self) -> None:
        """Raise a FlowError with the end of the log when the process has exited."""
        code = self.popen.poll()
        if code is not None:
            raise FlowError(f"{self.name} exited with code {code}; the end of {self.log}:\n{self.tail()}")

    def tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def terminate(self) -> None:
        """Ask the process to stop (SIGTERM, once): it drains, commits and exits."""
        if self.popen.poll() is None and not self._terminated:
            self._terminated = True
            self.popen.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait up to ``timeout`` for a clean exit, then SIGKILL; return the exit code."""
        if self.popen.poll() is None:
            self.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        return int(self.popen.returncode)


def end_offsets(kafka_config: dict[str, Any], topics: Iterable[str]) -> dict[str, int]:
    """The sum of the high watermarks of each topic (0 for a topic that does not exist yet)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {**kafka_config, "group.id": "thimble-flow-offsets", "enable.auto.commit": False, "log_level": 0}
    )
    try:
        metadata = consumer.list_topics(timeout=10)
        out = {}
        for topic in topics:
            info = metadata.topics.get(topic)
            if info is None or info.error is not None:
                out[topic] = 0
                continue
            out[topic] = sum(_high_watermark(consumer, TopicPartition(topic, p)) for p in info.partitions)
        return out
    finally:
        consumer.close()


def _high_watermark(consumer: Any, partition: Any, timeout: float = 10.0) -> int:
    """A partition's high watermark; a topic created a moment ago may still be electing its leader."""
    from confluent_kafka import KafkaError, KafkaException

    electing = {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
    }
    deadline = time.monotonic() + timeout
    while True:
        try:
            high: int = consumer.get_watermark_offsets(partition, timeout=timeout)[1]
            return high
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() not in electing or time.monotonic() > deadline:
                raise FlowError(
                    f"cannot read the end offset of {partition.topic}[{partition.partition}]: {error.str()}"
                ) from None
        time.sleep(0.1)


def scrape(url: str, names: Iterable[str]) -> dict[str, float]:
    """Sum each named Prometheus metric (over its labels) from a ``/metrics`` page; missing ones are 0."""
    wanted = set(names)
    totals = dict.fromkeys(wanted, 0.0)
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return totals
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in wanted:
            with contextlib.suppress(ValueError):
                totals[name] += float(line.rsplit(" ", 1)[1])
    return totals
