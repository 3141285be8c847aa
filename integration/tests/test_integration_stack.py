"""The local stack against real services: a second stack beside the main one, on its own ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from integration._procs import cmdline, port_free
from integration._settings import REPO_ROOT
from integration._testing import Stack, make_stack
from thimble.common.config import ThimbleSettings
from thimble.testing import TopicReader, produce, wait_until

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

pytestmark = pytest.mark.integration


def _output(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


def test_broker_round_trip(side_stack: Stack) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    conf: dict[str, Any] = {"bootstrap.servers": side_stack.bootstrap}
    topic = f"stack-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(conf)
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=30)
    produce(conf, topic, [(b"k", b"through the side broker")])
    with TopicReader(conf, topic) as reader:
        [message] = reader.wait_for(1, 60)
    assert (message.key(), message.value(), message.offset()) == (b"k", b"through the side broker", 0)


def test_topics_are_never_created_implicitly(side_stack: Stack) -> None:
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": side_stack.bootstrap})
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    error = admin.list_topics(missing, timeout=10).topics[missing].error
    assert error is not None
    assert error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    assert missing not in admin.list_topics(timeout=10).topics


def test_redis_set_get(side_stack: Stack) -> None:
    import redis

    client = redis.Redis(host="127.0.0.1", port=side_stack.redis_port)
    try:
        client.set("stack:test", "value", ex=60)
        assert client.get("stack:test") == b"value"
    finally:
        client.close()


def test_status_shows_every_service_up(side_stack: Stack) -> None:
    result = side_stack.run("status")
    assert result.returncode == 0, _output(result)
    pids = side_stack.pids()
    for service in ("kafka", "redis"):
        assert f"{service} " in result.stdout
        assert str(pids[service]) in result.stdout


def test_up_again_is_a_no_op(side_stack: Stack) -> None:
    before = side_stack.pids()
    starts = (side_stack.run_dir / "logs" / "kafka.log").read_text().count("starting:")
    result = side_stack.run("up")
    assert result.returncode == 0, _output(result)
    assert "already up" in result.stdout
    assert side_stack.pids() == before
    assert (side_stack.run_dir / "logs" / "kafka.log").read_text().count("starting:") == starts


def test_logs_shows_the_end_of_each_log(side_stack: Stack) -> None:
    result = side_stack.run("logs", "kafka", "-n", "5")
    assert result.returncode == 0, _output(result)
    assert str(side_stack.run_dir / "logs" / "kafka.log") in result.stdout
    assert "Kafka Server started" in (side_stack.run_dir / "logs" / "kafka.log").read_text()
    assert len([line for line in result.stdout.splitlines() if line.startswith("[")]) <= 5
    both = side_stack.run("logs", "-n", "1")
    assert "redis.log" in both.stdout
    assert "kafka.log" in both.stdout


def test_stale_pid_files_are_repaired(side_stack: Stack) -> None:
    real = side_stack.pids()
    dead = subprocess.Popen(["true"])
    dead.wait()
    side_stack.pid_file("redis").write_text(f"{dead.pid}\n")  # a process that is gone
    side_stack.pid_file("kafka").write_text(f"{os.getpid()}\n")  # a live process that is not Kafka
    result = side_stack.run("up")
    assert result.returncode == 0, _output(result)
    assert "removed a stale pid file (its process is gone)" in result.stdout
    assert f"pid {os.getpid()} is now another program" in result.stdout
    assert "already up" in result.stdout
    assert side_stack.pids() == real


def test_taken_port_is_reported_and_nothing_starts(tmp_path: Path) -> None:
    stack = make_stack(tmp_path, redis_start=17379)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", stack.redis_port))
        squatter.listen()
        result = stack.run("up")
    assert result.returncode == 1
    assert f"port {stack.redis_port} is taken by pid {os.getpid()}" in result.stderr
    assert "nothing was started" in result.stderr
    assert "Traceback" not in _output(result)
    assert stack.pids() == {}
    assert port_free(stack.kafka_port)


def test_a_service_that_fails_to_start_shows_its_log_and_leaves_nothing(tmp_path: Path) -> None:
    stack = make_stack(tmp_path, redis_start=17479)
    data = tmp_path / "data" / "kafka"
    data.mkdir(parents=True)
    (data / "meta.properties").write_text("this is not a formatted log directory\n")
    (data / ".thimble-ports").write_text(f"{stack.kafka_port} {stack.kafka_port + 1}\n")
    try:
        result = stack.run("up")
        assert result.returncode == 1
        assert "kafka exited while starting" in result.stderr
        assert "Last lines of" in result.stderr
        assert "Traceback (most recent call last)" not in result.stderr.split("Last lines of")[0]
        assert stack.pids() == {}
        assert all(port_free(port) for port in stack.ports)
    finally:
        stack.kill_leftovers()


def test_jars_are_not_resolved_twice(side_stack: Stack) -> None:
    side_stack.run("jars")
    result = side_stack.run("jars", timeout=60)
    assert result.returncode == 0, _output(result)
    assert "kafka jars: up to date" in result.stdout
    assert "spark jars: up to date" in result.stdout


def test_down_leaves_no_process_and_is_idempotent(side_stack: Stack) -> None:
    pids = side_stack.pids()
    assert set(pids) == {"kafka", "redis"}
    result = side_stack.run("down")
    assert result.returncode == 0, _output(result)
    assert all(cmdline(pid) is None for pid in pids.values())
    assert all(port_free(port) for port in side_stack.ports)
    assert side_stack.pids() == {}

    side_stack.pid_file("kafka").write_text(f"{os.getpid()}\n")
    status = side_stack.run("status")
    assert status.returncode == 1
    assert "stale pid file" in status.stdout
    again = side_stack.run("down")
    assert again.returncode == 0, _output(again)
    assert "kafka: not running" in again.stdout
    assert side_stack.pids() == {}


def test_delta_table_and_its_history(spark: SparkSession, spark_settings: ThimbleSettings) -> None:
    table = f"{spark_settings.warehouse.database}.stack_smoke_{uuid.uuid4().hex[:8]}"
    spark.createDataFrame([(1, "a"), (2, "b")], "id INT, v STRING").write.format("delta").saveAsTable(table)
    spark.createDataFrame([(3, "c")], "id INT, v STRING").write.format("delta").mode("append").saveAsTable(
        table
    )
    rows = sorted(tuple(row) for row in spark.table(table).collect())
    history = spark.sql(f"DESCRIBE HISTORY {table}").orderBy("version").collect()
    assert rows == [(1, "a"), (2, "b"), (3, "c")]
    assert [(h["version"], h["operation"]) for h in history] == [
        (0, "CREATE TABLE AS SELECT"),
        (1, "WRITE"),
    ]


def test_docker_compose_file_describes_the_same_services() -> None:
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    assert services["redis"]["image"].startswith("redis:")
    assert "127.0.0.1:${KAFKA_HOST_PORT:-9092}:9092" in services["kafka"]["ports"]
    assert "127.0.0.1:${REDIS_HOST_PORT:-6379}:6379" in services["redis"]["ports"]


# -- a three-broker cluster (the session's, which the guarantee suite also runs on) -----------------


def _cluster_bootstrap(stack: Stack) -> str:
    return ",".join(f"127.0.0.1:{stack.kafka_port + 2 * i}" for i in range(3))


def test_cluster_status_shows_each_broker(kafka_cluster: Stack) -> None:
    result = kafka_cluster.run("status")
    assert result.returncode == 0, _output(result)
    pids = kafka_cluster.pids()
    assert set(pids) == {"kafka-1", "kafka-2", "kafka-3", "redis"}
    for index, name in enumerate(("kafka-1", "kafka-2", "kafka-3")):
        row = next(line for line in result.stdout.splitlines() if f" {name} " in line)
        assert " up " in row
        assert str(pids[name]) in row
        assert f"127.0.0.1:{kafka_cluster.kafka_port + 2 * index}" in row


def test_cluster_topics_are_replicated_three_times_with_two_in_sync(kafka_cluster: Stack) -> None:
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient({"bootstrap.servers": _cluster_bootstrap(kafka_cluster)})
    topic = f"cluster-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(topic, 3)])[topic].result(timeout=30)

    def described() -> Any:
        partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
        return (
            partitions
            if len(partitions) == 3 and all(len(p.isrs) == 3 for p in partitions.values())
            else None
        )

    partitions = wait_until(described, 30, what=f"{topic} with three in-sync replicas per partition")
    assert all(sorted(p.replicas) == [1, 2, 3] for p in partitions.values())
    assert len({p.leader for p in partitions.values()}) == 3  # leadership is spread over the brokers
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)  # type: ignore[attr-defined]

    def configured() -> Any:
        # the broker asked may learn of the new topic after the ones that answered the metadata request
        try:
            return admin.describe_configs([resource])[resource].result(timeout=30)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise
            return None

    config = wait_until(configured, 30, what=f"the configuration of {topic} on every broker")
    assert config["min.insync.replicas"].value == "2"


def test_cluster_logs_tail_every_broker(kafka_cluster: Stack) -> None:
    result = kafka_cluster.run("logs", "kafka", "-n", "3")
    assert result.returncode == 0, _output(result)
    for name in ("kafka-1", "kafka-2", "kafka-3"):
        assert str(kafka_cluster.run_dir / "logs" / f"{name}.log") in result.stdout
    assert "redis.log" not in result.stdout
    one = kafka_cluster.run("logs", "kafka-2", "-n", "1")
    assert "kafka-2.log" in one.stdout
    assert "kafka-1.log" not in one.stdout


def test_cluster_survives_a_killed_broker_and_up_restarts_only_it(kafka_cluster: Stack) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    conf = {"bootstrap.servers": _cluster_bootstrap(kafka_cluster)}
    admin = AdminClient(conf)
    topic = f"cluster-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(topic, 1)])[topic].result(timeout=30)  # replication 3, two in sync
    wait_until(
        lambda: len(admin.list_topics(topic, timeout=10).topics[topic].partitions[0].isrs) == 3,
        30,
        what=f"{topic} in sync on three brokers",
    )
    before = kafka_cluster.pids()
    os.kill(before["kafka-2"], signal.SIGKILL)
    wait_until(lambda: cmdline(before["kafka-2"]) is None, 10, what="kafka-2 to die")
    producer = Producer({**conf, "acks": "all"})
    errors: list[str] = []
    producer.produce(topic, b"two of three", on_delivery=lambda err, _m: err and errors.append(str(err)))
    assert producer.flush(60) == 0
    assert errors == []

    down = kafka_cluster.run("status")
    assert down.returncode == 1
    assert "stale pid file" in next(line for line in down.stdout.splitlines() if " kafka-2 " in line)
    result = kafka_cluster.run("up")  # no flag: the running stack's three brokers
    assert result.returncode == 0, _output(result)
    after = kafka_cluster.pids()
    assert after["kafka-2"] != before["kafka-2"]
    assert {k: v for k, v in after.items() if k != "kafka-2"} == {
        k: v for k, v in before.items() if k != "kafka-2"
    }
    assert "kafka-1: already up" in result.stdout


def test_cluster_refuses_another_broker_count_while_up(kafka_cluster: Stack) -> None:
    result = kafka_cluster.run("up", "--kafka-brokers", "1")
    assert result.returncode == 1
    assert "runs Kafka as kafka-1, kafka-2, kafka-3, not 1 broker(s); run `down` first" in result.stderr
    assert "Traceback" not in _output(result)


def test_cluster_down_stops_every_broker(kafka_cluster: Stack) -> None:
    pids = kafka_cluster.pids()
    result = kafka_cluster.run("down")
    assert result.returncode == 0, _output(result)
    assert all(cmdline(pid) is None for pid in pids.values())
    assert all(port_free(kafka_cluster.kafka_port + offset) for offset in range(6))
    assert kafka_cluster.pids() == {}
    assert not (kafka_cluster.run_dir / "conf" / "kafka-brokers").exists()
