"""Apache Kafka in KRaft combined mode (each node broker and controller), run from Maven-resolved jars.

One node by default; ``kafka_brokers`` nodes form a cluster with a static three-or-more voter quorum.
"""

from __future__ import annotations

import base64
import contextlib
import subprocess
import uuid
from pathlib import Path

from integration._procs import port_open, tail
from integration._service import Service
from integration._settings import StackSettings, find_java
from integration.errors import JarsError, ServiceFailedError, StackError

NODE_ID = 1
HEAP_SINGLE = ["-Xms256m", "-Xmx1g"]
# A cluster shares the machine with Spark and Redis: each node gets a small heap and few threads.
HEAP_CLUSTER_NODE = ["-Xms128m", "-Xmx384m"]
JVM_OPTS = [
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
]
FORMAT_TIMEOUT_S = 120.0

LOG4J2 = """\
# Written by integration/stack.py: the broker logs to stdout, which the stack appends to logs/kafka.log.
status = warn
name = thimble-kafka
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = WARN
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = WARN
logger.segments.name = org.apache.kafka.storage.internals.log
logger.segments.level = WARN
"""


def random_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding, never starting with '-'."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def cluster_id_for(settings: StackSettings) -> str:
    """The cluster id every node of the stack's cluster is formatted with, made once per run folder."""
    path = settings.data_dir / "kafka-cluster-id"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    cluster_id = random_cluster_id()
    path.write_text(cluster_id + "\n")
    return cluster_id


def kafka_nodes(settings: StackSettings) -> list[Kafka]:
    """The stack's Kafka nodes: ``kafka`` alone, or ``kafka-1`` … ``kafka-N`` for a cluster."""
    return [Kafka(settings, index) for index in range(settings.kafka_brokers)]


class Kafka(Service):
    """One Kafka 4.x node in KRaft combined mode on loopback.

    Alone it is ``kafka`` (broker on ``kafka_port``, controller on the next port, as always). In a
    cluster, node ``index`` is ``kafka-<index+1>`` with node id ``index+1``, broker on
    ``kafka_port + 2*index`` and controller on the next port; every node is a voter of the quorum.
    """

    ready_timeout = 90.0
    stop_timeout = 45.0

    def __init__(self, settings: StackSettings, index: int = 0) -> None:
        super().__init__(settings)
        self.index = index
        self.clustered = settings.kafka_brokers > 1
        self.name = f"kafka-{index + 1}" if self.clustered else "kafka"
        self.node_id = index + 1 if self.clustered else NODE_ID
        self.conf_dir = settings.conf_dir / self.name
        self.data_dir = settings.data_dir / self.name
        self.jars_dir = settings.jars_dir / "kafka"
        if self.clustered:
            # A cluster restarts nodes while the rest carry on: give each time to catch up.
            self.ready_timeout = 120.0

    @property
    def broker_port(self) -> int:
        return self.settings.broker_port(self.index)

    @property
    def controller_port(self) -> int:
        return self.settings.broker_controller_port(self.index)

    @property
    def properties_path(self) -> Path:
        return self.conf_dir / "server.properties"

    @property
    def log4j_path(self) -> Path:
        return self.conf_dir / "log4j2.properties"

    @property
    def ports(self) -> list[int]:
        return [self.broker_port, self.controller_port]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.broker_port}"

    @property
    def voters(self) -> str:
        """The static controller quorum of a cluster: ``1@127.0.0.1:9093,2@127.0.0.1:9095,…``."""
        return ",".join(
            f"{i + 1}@127.0.0.1:{self.settings.broker_controller_port(i)}"
            for i in range(self.settings.kafka_brokers)
        )

    @property
    def marker(self) -> str:
        return str(self.properties_path)

    def server_properties(self) -> str:
        broker, controller = self.broker_port, self.controller_port
        quorum = (
            {"controller.quorum.voters": self.voters}
            if self.clustered
            else {"controller.quorum.bootstrap.servers": f"127.0.0.1:{controller}"}
        )
        settings: dict[str, str | int] = {
            "process.roles": "broker,controller",
            "node.id": self.node_id,
            **quorum,
            "listeners": f"PLAINTEXT://127.0.0.1:{broker},CONTROLLER://127.0.0.1:{controller}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{broker},CONTROLLER://127.0.0.1:{controller}",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": 1,
            "default.replication.factor": 1,
            "min.insync.replicas": 1,
            "offsets.topic.replication.factor": 1,
            "offsets.topic.num.partitions": 10,
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "share.coordinator.state.topic.replication.factor": 1,
            "share.coordinator.state.topic.min.isr": 1,
            "group.initial.rebalance.delay.ms": 0,
            "auto.create.topics.enable": "false",
            "delete.topic.enable": "true",
            "log.retention.hours": 168,
        }
        if self.clustered:
            settings.update(self._cluster_properties())
        lines = [f"{key}={value}" for key, value in settings.items()]
        return (
            "# Written by integration/stack.py on every start; edit the code, not this file.\n"
            + "\n".join(lines)
            + "\n"
        )

    def _cluster_properties(self) -> dict[str, str | int]:
        """Replicated internal topics, durable writes (replication 3, two in sync), quick failure detection."""
        replication = min(3, self.settings.kafka_brokers)
        in_sync = max(1, replication - 1)
        return {
            "default.replication.factor": replication,
            "min.insync.replicas": in_sync,
            "offsets.topic.replication.factor": replication,
            "transaction.state.log.replication.factor": replication,
            "transaction.state.log.min.isr": in_sync,
            "share.coordinator.state.topic.replication.factor": replication,
            "share.coordinator.state.topic.min.isr": in_sync,
            "unclean.leader.election.enable": "false",
            # A killed node is fenced (and its partitions get new leaders) within seconds.
            "broker.heartbeat.interval.ms": 1000,
            "broker.session.timeout.ms": 6000,
            # Members of the consumer group protocol (KIP-848) that die are dropped as fast as classic ones.
            "group.consumer.min.session.timeout.ms": 6000,
            "group.consumer.session.timeout.ms": 10000,
            "num.network.threads": 2,
            "num.io.threads": 2,
            "background.threads": 2,
            "num.replica.fetchers": 1,
        }

    def _java(self, main: str, *args: str) -> list[str]:
        return [
            find_java(),
            *(HEAP_CLUSTER_NODE if self.clustered else HEAP_SINGLE),
            *JVM_OPTS,
            f"-Dlog4j2.configurationFile={self.log4j_path}",
            f"-Dkafka.logs.dir={self.settings.logs_dir}",
            "-cp",
            str(self.jars_dir / "*"),
            main,
            *args,
        ]

    def prepare(self) -> None:
        if not any(self.jars_dir.glob("kafka_2.13-*.jar")):
            raise JarsError(
                f"no Kafka jars in {self.jars_dir}: run `./dev setup` (or `integration/stack.py jars`)"
            )
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.properties_path.write_text(self.server_properties())
        self.log4j_path.write_text(LOG4J2)
        self._format_once()

    def _format_once(self) -> None:
        ports_file = self.data_dir / ".thimble-ports"
        ports = f"{self.broker_port} {self.controller_port}"
        if self.clustered:
            ports += f" voters {self.voters}"
        if (self.data_dir / "meta.properties").exists():
            formatted_for = ports_file.read_text().strip() if ports_file.exists() else ports
            if formatted_for != ports:
                raise StackError(
                    f"the Kafka storage in {self.data_dir} was formatted for ports {formatted_for}, not {ports}; "
                    "use another THIMBLE_RUN_DIR or the original ports"
                )
            return
        cluster_id = cluster_id_for(self.settings) if self.clustered else random_cluster_id()
        # A cluster's quorum is static (controller.quorum.voters); a single node bootstraps its own.
        quorum = [] if self.clustered else ["--standalone"]
        argv = self._java(
            "kafka.tools.StorageTool", "format", *quorum, "-t", cluster_id, "-c", str(self.properties_path)
        )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"--- formatting storage in {self.data_dir} (cluster id {cluster_id})\n".encode())
            log.flush()
            try:
                result = subprocess.run(
                    argv, stdout=log, stderr=subprocess.STDOUT, timeout=FORMAT_TIMEOUT_S, check=False
                )
            except subprocess.TimeoutExpired:
                raise ServiceFailedError(
                    f"formatting Kafka storage took over {FORMAT_TIMEOUT_S:.0f}s; log tail:\n{tail(self.log_path)}"
                ) from None
        if result.returncode != 0:
            raise ServiceFailedError(
                f"formatting Kafka storage failed (exit {result.returncode}); log tail:\n{tail(self.log_path)}"
            )
        ports_file.write_text(ports + "\n")

    def argv(self) -> list[str]:
        return self._java("kafka.Kafka", str(self.properties_path))

    def healthy(self) -> bool:
        if not port_open(self.broker_port):
            return False
        from confluent_kafka.admin import AdminClient

        # log_level 0 keeps librdkafka quiet about refused connections while the broker starts.
        admin = AdminClient({"bootstrap.servers": self.address, "log_level": 0, "socket.timeout.ms": 2000})
        with contextlib.suppress(Exception):
            metadata = admin.list_topics(timeout=2)
            return self.node_id in metadata.brokers
        return False
