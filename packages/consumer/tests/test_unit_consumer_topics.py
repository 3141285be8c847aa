"""The start's topic check: it reads the metadata the broker wait got, and only a topic the cluster does
not know is missing (a broker lost in between, or a leader being elected, must not fail the start)."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin._metadata import BrokerMetadata, ClusterMetadata, TopicMetadata

from thimble.consumer._kafka import ensure_topics, wait_for_broker
from thimble.consumer.errors import ConsumerError, TopicMissingError


def _metadata(**topics: KafkaError | None) -> ClusterMetadata:
    metadata = ClusterMetadata()
    metadata.brokers = {1: BrokerMetadata()}
    for name, error in topics.items():
        topic = TopicMetadata()
        topic.topic, topic.error = name, error
        metadata.topics[name] = topic
    return metadata


class AnswersOnce:
    """An admin client whose broker answers one metadata request, then is gone."""

    def __init__(self, metadata: ClusterMetadata) -> None:
        self.answers = [metadata]
        self.created: list[Any] = []

    def list_topics(self, timeout: float) -> ClusterMetadata:
        if not self.answers:
            raise KafkaException(
                KafkaError(KafkaError._TIMED_OUT, "Failed to get metadata: Local: Timed out")
            )
        return self.answers.pop()

    def create_topics(self, new_topics: list[Any]) -> dict[str, Any]:
        self.created += new_topics
        return {}


def test_a_broker_lost_after_it_answered_does_not_fail_the_topic_check() -> None:
    admin = AnswersOnce(_metadata(src=None, dst=None))
    metadata = wait_for_broker(admin, "kafka:9092", lambda _s: False, 1.0)  # type: ignore[arg-type]
    assert metadata is not None
    assert ensure_topics(admin, metadata, ["src", "dst"], False, 3, 1) == []  # type: ignore[arg-type]


def test_a_topic_with_a_passing_error_exists() -> None:
    leaderless = KafkaError(KafkaError.LEADER_NOT_AVAILABLE)
    metadata = _metadata(src=leaderless)
    assert ensure_topics(AnswersOnce(metadata), metadata, ["src"], False, 3, 1) == []  # type: ignore[arg-type]


def test_a_topic_the_cluster_does_not_know_is_missing() -> None:
    metadata = _metadata(src=KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART))
    with pytest.raises(TopicMissingError, match=r"'dst', 'src'.*--create-topics"):
        ensure_topics(AnswersOnce(metadata), metadata, ["dst", "src"], False, 3, 1)  # type: ignore[arg-type]
    admin = AnswersOnce(metadata)
    assert ensure_topics(admin, metadata, ["src"], True, 3, 1) == ["src"]  # type: ignore[arg-type]
    assert [t.topic for t in admin.created] == ["src"]


def test_a_topic_this_client_may_not_use_is_named_as_such() -> None:
    metadata = _metadata(src=KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))
    with pytest.raises(ConsumerError, match=r"not authorized to use topic.*'src'"):
        ensure_topics(AnswersOnce(metadata), metadata, ["src"], True, 3, 1)  # type: ignore[arg-type]
