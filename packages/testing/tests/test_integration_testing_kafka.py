"""Producing to and reading from the real broker: JSON, bytes, tombstones, keys, round-robin partitions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from thimble.testing import TopicReader, produce

pytestmark = pytest.mark.integration


def test_what_is_produced_is_read_back_in_order(
    kafka_config: dict[str, Any], kafka_topic: Callable[..., str], reader: Callable[[str], TopicReader]
) -> None:
    topic = kafka_topic("testing")
    produce(kafka_config, topic, [(1, {"id": 1}), (b"k2", b"raw"), ("k3", None)], headers=[("h", b"v")])
    got = reader(topic).wait_for(3)
    assert [(m.key(), m.value()) for m in got] == [(b"1", b'{"id":1}'), (b"k2", b"raw"), (b"k3", None)]
    assert got[0].headers() == [("h", b"v")]


def test_a_reader_waits_until_what_it_read_satisfies_the_test(
    kafka_config: dict[str, Any], kafka_topic: Callable[..., str], reader: Callable[[str], TopicReader]
) -> None:
    topic = kafka_topic("testing")
    produce(kafka_config, topic, [(i, {"id": i % 3}) for i in range(6)])
    ids = reader(topic)
    ids.wait_until(lambda: {v["id"] for v in ids.values()} == {0, 1, 2}, what="ids 0, 1 and 2")
    assert {v["id"] for v in ids.values()} == {0, 1, 2}
    with pytest.raises(pytest.fail.Exception, match="timed out after 1s waiting for an id 3"):
        ids.wait_until(lambda: 3 in {v["id"] for v in ids.values()}, timeout=1, what="an id 3")


def test_records_spread_round_robin_over_partitions(
    kafka_config: dict[str, Any], kafka_topic: Callable[..., str]
) -> None:
    topic = kafka_topic("testing", partitions=2)
    produce(kafka_config, topic, [(None, {"i": i}) for i in range(5)], partitions=2)
    with TopicReader(kafka_config, topic) as topic_reader:
        got = topic_reader.wait_for(5)
        assert sorted(topic_reader.values(), key=lambda v: v["i"]) == [{"i": i} for i in range(5)]
    assert sorted((m.partition(), m.offset(), m.value()) for m in got) == [
        (0, 0, b'{"i":0}'),
        (0, 1, b'{"i":2}'),
        (0, 2, b'{"i":4}'),
        (1, 0, b'{"i":1}'),
        (1, 1, b'{"i":3}'),
    ]
