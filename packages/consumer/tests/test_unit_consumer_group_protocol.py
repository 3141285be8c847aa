"""The consumer group protocol: classic (cooperative-sticky) or consumer (KIP-848), accepted by librdkafka."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer

from thimble.common.config import load_settings
from thimble.common.errors import ConfigError
from thimble.consumer._kafka import consumer_config
from thimble.consumer.config import ConsumerSettings

pytestmark = pytest.mark.unit


def _config(protocol: str | None) -> dict[str, object]:
    consumer = {"group_protocol": protocol} if protocol else {}
    settings = load_settings(ConsumerSettings, overrides={"consumer": consumer})
    return consumer_config(settings, "group", "client")


def test_classic_protocol_is_the_default_and_cooperative_sticky() -> None:
    conf = _config(None)
    assert "group.protocol" not in conf
    assert conf["partition.assignment.strategy"] == "cooperative-sticky"
    assert conf["session.timeout.ms"] == 45_000


def test_consumer_protocol_leaves_session_and_assignor_to_the_broker() -> None:
    conf = _config("consumer")
    assert conf["group.protocol"] == "consumer"
    assert "session.timeout.ms" not in conf
    assert "partition.assignment.strategy" not in conf


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_librdkafka_accepts_the_configuration(protocol: str) -> None:
    conf = {k: v for k, v in _config(protocol).items() if k != "logger"}
    Consumer(conf).close()  # refuses, e.g., session.timeout.ms with group.protocol=consumer


def test_an_unknown_protocol_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="group_protocol"):
        load_settings(ConsumerSettings, overrides={"consumer": {"group_protocol": "eager"}})
