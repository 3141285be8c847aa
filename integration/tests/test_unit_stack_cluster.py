"""A Kafka cluster's layout without running it: ports, quorum, properties, the broker count."""

from __future__ import annotations

from pathlib import Path

import pytest

from integration._kafka import Kafka, kafka_nodes
from integration._settings import StackSettings
from integration.errors import StackError

pytestmark = pytest.mark.unit


def _cluster(tmp_path: Path, brokers: int = 3) -> StackSettings:
    return StackSettings(
        run_dir=tmp_path,
        jars_dir=tmp_path / "jars",
        kafka_port=19092,
        redis_port=16379,
        kafka_brokers=brokers,
    )


def _properties(node: Kafka) -> dict[str, str]:
    lines = node.server_properties().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_each_node_has_its_own_name_ports_and_folders(tmp_path: Path) -> None:
    nodes = kafka_nodes(_cluster(tmp_path))
    assert [n.name for n in nodes] == ["kafka-1", "kafka-2", "kafka-3"]
    assert [n.ports for n in nodes] == [[19092, 19093], [19094, 19095], [19096, 19097]]
    assert len({n.marker for n in nodes}) == 3
    assert [n.data_dir for n in nodes] == [tmp_path / "data" / f"kafka-{i}" for i in (1, 2, 3)]
    assert _cluster(tmp_path).bootstrap_servers == "127.0.0.1:19092,127.0.0.1:19094,127.0.0.1:19096"


def test_cluster_nodes_share_a_static_quorum_and_replicate_three_times(tmp_path: Path) -> None:
    props = [_properties(node) for node in kafka_nodes(_cluster(tmp_path))]
    voters = "1@127.0.0.1:19093,2@127.0.0.1:19095,3@127.0.0.1:19097"
    for node_id, p in enumerate(props, 1):
        assert p["node.id"] == str(node_id)
        assert p["controller.quorum.voters"] == voters
        assert "controller.quorum.bootstrap.servers" not in p
        assert (p["default.replication.factor"], p["min.insync.replicas"]) == ("3", "2")
        assert (p["offsets.topic.replication.factor"], p["transaction.state.log.min.isr"]) == ("3", "2")
        assert p["unclean.leader.election.enable"] == "false"
    assert props[1]["listeners"] == "PLAINTEXT://127.0.0.1:19094,CONTROLLER://127.0.0.1:19095"


def test_a_single_node_keeps_its_historic_layout(tmp_path: Path) -> None:
    [node] = kafka_nodes(_cluster(tmp_path, brokers=1))
    assert node.name == "kafka"
    assert node.data_dir == tmp_path / "data" / "kafka"
    assert "-Xmx1g" in node.argv()
    p = _properties(node)
    assert (p["node.id"], p["default.replication.factor"]) == ("1", "1")
    assert "controller.quorum.voters" not in p


def test_cluster_nodes_get_a_small_heap(tmp_path: Path) -> None:
    argv = kafka_nodes(_cluster(tmp_path))[0].argv()
    assert "-Xmx384m" in argv
    assert "-Xmx1g" not in argv


def test_broker_count_comes_from_the_flag_the_environment_or_the_running_stack(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("THIMBLE_RUN_DIR", str(tmp_path))
    monkeypatch.delenv("THIMBLE_STACK_KAFKA_BROKERS", raising=False)
    monkeypatch.delenv("THIMBLE_STACK_KAFKA_PORT", raising=False)
    monkeypatch.delenv("THIMBLE_STACK_REDIS_PORT", raising=False)
    assert StackSettings.from_env().kafka_brokers == 1
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "kafka-brokers").write_text("3\n")  # what `up --kafka-brokers 3` leaves
    assert StackSettings.from_env().kafka_brokers == 3
    assert StackSettings.from_env(1).kafka_brokers == 1
    monkeypatch.setenv("THIMBLE_STACK_KAFKA_BROKERS", "2")
    assert StackSettings.from_env().kafka_brokers == 2


@pytest.mark.parametrize(
    ("brokers", "redis", "message"),
    [
        (0, "6379", "--kafka-brokers=0 is out of range: the stack runs 1 to 9 Kafka brokers"),
        (3, "9096", "Redis port 9096 collides with Kafka's ports 9092/9093/9094/9095/9096/9097"),
    ],
)
def test_bad_cluster_settings_are_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, brokers: int, redis: str, message: str
) -> None:
    monkeypatch.setenv("THIMBLE_RUN_DIR", str(tmp_path))
    monkeypatch.delenv("THIMBLE_STACK_KAFKA_PORT", raising=False)
    monkeypatch.setenv("THIMBLE_STACK_REDIS_PORT", redis)
    with pytest.raises(StackError, match=message):
        StackSettings.from_env(brokers)


def test_cluster_ports_past_the_last_port_are_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("THIMBLE_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("THIMBLE_STACK_KAFKA_PORT", "65530")
    monkeypatch.setenv("THIMBLE_STACK_REDIS_PORT", "6379")
    assert StackSettings.from_env(3).kafka_ports[-1] == 65535
    with pytest.raises(
        StackError, match="4 Kafka brokers from port 65530 need ports up to 65537, past 65535"
    ):
        StackSettings.from_env(4)
