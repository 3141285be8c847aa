"""The stack's parts that need no running service: names, configs, pid files, port owners, settings."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from integration._jars import artifact_name, pyspark_jars_dir
from integration._kafka import Kafka, random_cluster_id
from integration._procs import PidFile, describe_taken, start_time
from integration._redis import Redis
from integration._settings import StackSettings
from integration._stack import _failure
from integration.errors import StackError
from integration.stack import app
from thimble.testing import wait_until

pytestmark = pytest.mark.unit


def _settings(tmp_path: Path, kafka: int = 19092, redis: int = 16379) -> StackSettings:
    return StackSettings(run_dir=tmp_path, jars_dir=tmp_path / "jars", kafka_port=kafka, redis_port=redis)


@pytest.mark.parametrize(
    ("jar", "name"),
    [
        ("jackson-core-2.13.5.jar", "jackson-core"),
        ("delta-spark_4.1_2.13-4.4.0.jar", "delta-spark_4.1_2.13"),
        ("spark-sql-kafka-0-10_2.13-4.1.1.jar", "spark-sql-kafka-0-10_2.13"),
        ("zstd-jni-1.5.7-3.jar", "zstd-jni"),
        ("jackson-annotations-2.20.jar", "jackson-annotations"),
        ("commons-pool-1.6.jar", "commons-pool"),
        ("shims-0.9.25.jar", "shims"),
        ("unversioned.jar", "unversioned"),
    ],
)
def test_artifact_name_drops_the_version(jar: str, name: str) -> None:
    assert artifact_name(jar) == name


def test_jars_that_pyspark_ships_are_recognised() -> None:
    shipped = {artifact_name(jar.name) for jar in pyspark_jars_dir().glob("*.jar")}
    assert {"jackson-core", "jackson-databind", "log4j-core", "hadoop-client-api"} <= shipped
    assert not {"delta-spark_4.1_2.13", "spark-sql-kafka-0-10_2.13", "commons-pool2"} & shipped


def test_cluster_id_is_a_kafka_uuid() -> None:
    ids = {random_cluster_id() for _ in range(50)}
    assert len(ids) == 50
    for cluster_id in ids:
        assert len(cluster_id) == 22
        assert not cluster_id.startswith("-")
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_server_properties_for_a_single_kraft_node(tmp_path: Path) -> None:
    props = dict(
        line.split("=", 1)
        for line in Kafka(_settings(tmp_path)).server_properties().splitlines()
        if line and not line.startswith("#")
    )
    assert props["process.roles"] == "broker,controller"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:19093"
    assert props["log.dirs"] == str(tmp_path / "data" / "kafka")
    assert props["auto.create.topics.enable"] == "false"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"


def test_redis_listens_on_loopback_only(tmp_path: Path) -> None:
    lines = Redis(_settings(tmp_path)).config().splitlines()
    assert {"bind 127.0.0.1", "port 16379", "protected-mode yes", "daemonize no", "appendonly no"} <= set(
        lines
    )
    assert f'dir "{tmp_path / "data" / "redis"}"' in lines


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("THIMBLE_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("THIMBLE_STACK_KAFKA_PORT", "29092")
    monkeypatch.setenv("THIMBLE_STACK_REDIS_PORT", "26379")
    monkeypatch.delenv("THIMBLE_STACK_JARS_DIR", raising=False)
    settings = StackSettings.from_env()
    assert (settings.kafka_port, settings.controller_port, settings.redis_port) == (29092, 29093, 26379)
    assert settings.jars_dir == tmp_path / "jars"


@pytest.mark.parametrize(
    ("kafka", "redis", "message"),
    [
        ("nine", "6379", "THIMBLE_STACK_KAFKA_PORT='nine' is not a port number"),
        ("9092", "70000", "THIMBLE_STACK_REDIS_PORT=70000 is out of range"),
        ("9092", "9093", "Redis port 9093 collides with Kafka's ports 9092/9093"),
    ],
)
def test_bad_settings_are_named(
    monkeypatch: pytest.MonkeyPatch, kafka: str, redis: str, message: str
) -> None:
    monkeypatch.setenv("THIMBLE_STACK_KAFKA_PORT", kafka)
    monkeypatch.setenv("THIMBLE_STACK_REDIS_PORT", redis)
    with pytest.raises(StackError, match=message.replace("(", r"\(").replace(")", r"\)")):
        StackSettings.from_env()


def test_pid_file_tells_the_service_from_a_reused_pid(tmp_path: Path) -> None:
    kafka = Kafka(_settings(tmp_path))
    pid_file = PidFile(tmp_path / "kafka.pid")
    pid_file.write(os.getpid())
    assert pid_file.read() == (os.getpid(), start_time(os.getpid()))
    assert not kafka.owns(os.getpid())  # this test process is not the broker

    proc = subprocess.Popen(["sh", "-c", "sleep 30", kafka.marker])
    try:
        wait_until(lambda: kafka.owns(proc.pid), 10, what="the stand-in process to exec")
        assert kafka.owns(proc.pid, start_time(proc.pid))
        assert not kafka.owns(proc.pid, (start_time(proc.pid) or 0) + 1)  # same pid, another process
    finally:
        proc.kill()
        proc.wait()
    assert not kafka.owns(proc.pid)

    pid_file.path.write_text("not a pid\n")
    assert pid_file.read() is None


def test_port_owner_is_named() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        [sentence] = describe_taken([port])
    assert sentence.startswith(f"port {port} is taken by pid {os.getpid()} (")


def test_unknown_service_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("THIMBLE_RUN_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["logs", "zookeeper"])
    assert result.exit_code == 1
    assert "unknown service 'zookeeper'; the stack has: kafka, redis" in result.output


def test_storage_formatted_for_other_ports_is_refused(tmp_path: Path) -> None:
    kafka = Kafka(_settings(tmp_path, kafka=19092))
    kafka.data_dir.mkdir(parents=True)
    (kafka.data_dir / "meta.properties").write_text("node.id=1\n")
    (kafka.data_dir / ".thimble-ports").write_text("9092 9093\n")
    with pytest.raises(StackError, match="formatted for ports 9092 9093, not 19092 19093"):
        kafka._format_once()


def test_a_service_that_dies_while_starting_is_reported_with_the_cause_it_logged(tmp_path: Path) -> None:
    kafka = Kafka(_settings(tmp_path))
    kafka.log_path.parent.mkdir(parents=True)
    kafka.log_path.write_text(
        "--- 2026-01-01T00:00:00+00:00 starting: java kafka.Kafka\n"
        "[2026-01-01 00:00:01,000] ERROR an error of the previous start (kafka.Kafka$)\n"
        "--- 2026-01-02T00:00:00+00:00 starting: java kafka.Kafka\n"
        "[2026-01-02 00:00:01,000] INFO Starting controller (kafka.server.ControllerServer)\n"
        "[2026-01-02 00:00:02,000] ERROR Exiting Kafka due to fatal exception during startup. (kafka.Kafka$)\n"
        "org.apache.kafka.common.KafkaException: Socket server failed to bind to 127.0.0.1:19092\n"
        "\tat kafka.network.Acceptor.openServerSocket(SocketServer.scala:734)\n"
        + "".join(
            f"[2026-01-02 00:00:03,{n:03}] INFO shutting down part {n} (kafka.Kafka$)\n" for n in range(60)
        )
    )
    message = str(_failure(kafka, "exited while starting"))
    cause, last_lines = message.split("Last lines of", 1)
    assert "Socket server failed to bind to 127.0.0.1:19092" in cause
    assert "Exiting Kafka due to fatal exception" in cause
    assert "previous start" not in message
    assert "\tat kafka.network" not in cause
    assert "shutting down part 59" in last_lines
