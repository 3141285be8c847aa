"""How the consumer fetches: a short backoff when a partition's local queue is full, which users may change."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer

from thimble.common.config import load_settings
from thimble.consumer._kafka import FETCH_QUEUE_BACKOFF_MS, consumer_config
from thimble.consumer.config import ConsumerSettings

pytestmark = pytest.mark.unit


def _config(extra: dict[str, object]) -> dict[str, object]:
    settings = load_settings(ConsumerSettings, overrides={"consumer": {"consumer_extra": extra}})
    return consumer_config(settings, "group", "client")


def test_a_full_local_queue_delays_the_next_fetch_briefly_not_by_librdkafkas_second() -> None:
    conf = _config({})
    assert conf["fetch.queue.backoff.ms"] == FETCH_QUEUE_BACKOFF_MS < 1000
    Consumer({k: v for k, v in conf.items() if k != "logger"}).close()  # librdkafka knows the property


def test_consumer_extra_overrides_the_backoff() -> None:
    assert _config({"fetch.queue.backoff.ms": 500})["fetch.queue.backoff.ms"] == 500
