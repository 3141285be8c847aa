"""How the consumer fetches: a short backoff when a partition's local queue is full, which users may change."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer

from thimble.common.config import CONSUMER_DEFAULTS, load_settings
from thimble.consumer._kafka import consumer_config
from thimble.consumer.config import ConsumerSettings

pytestmark = pytest.mark.unit


def _config(extra: dict[str, object], kafka_extra: dict[str, object] | None = None) -> dict[str, object]:
    settings = load_settings(
        ConsumerSettings,
        overrides={"consumer": {"consumer_extra": extra}, "kafka": {"extra": kafka_extra or {}}},
    )
    return consumer_config(settings, "group", "client")


def test_a_full_local_queue_delays_the_next_fetch_briefly_not_by_librdkafkas_second() -> None:
    conf = _config({})
    assert conf["fetch.queue.backoff.ms"] == CONSUMER_DEFAULTS["fetch.queue.backoff.ms"] < 1000
    Consumer({k: v for k, v in conf.items() if k != "logger"}).close()  # librdkafka knows the property


def test_consumer_extra_overrides_the_backoff() -> None:
    assert _config({"fetch.queue.backoff.ms": 500})["fetch.queue.backoff.ms"] == 500


def test_kafka_extra_overrides_the_backoff_too() -> None:
    assert _config({}, {"fetch.queue.backoff.ms": 300})["fetch.queue.backoff.ms"] == 300
