"""The start's topic check: it reads the metadata the broker wait got, and only a topic the cluster does
not know is missing (a broker lost in between, or a leader being elected, must not fail the start);
a creation the cluster did not answer is asked again, one it refused is one line at once."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin._metadata import BrokerMetadata, ClusterMetadata, TopicMetadata

from thimble.consumer import _kafka
from thimble.consumer._kafka import ensure_topics, wait_for_broker
from thimble.consumer.errors import ConsumerError, TopicMissingError
from thimble.consumer.sinks import Topic as _Topic


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

    def create_topics(self, new_topics: list[Any], request_timeout: float) -> dict[str, Future[None]]:
        self.created += new_topics
        return {t.topic: _answer(None) for t in new_topics}


def _answer(code: int | None) -> Future[None]:
    future: Future[None] = Future()
    if code is None:
        future.set_result(None)
    else:
        future.set_exception(KafkaException(KafkaError(code, f"error {code}")))
    return future


class CreateAnswers:
    """An admin client whose topic creations get these answers in turn (``None``: created; ``"none"``:
    no answer at all)."""

    def __init__(self, *answers: int | str | None) -> None:
        self.answers = list(answers)
        self.requests: list[list[str]] = []

    def create_topics(self, new_topics: list[Any], request_timeout: float) -> dict[str, Future[None]]:
        self.requests.append([t.topic for t in new_topics])
        answer = self.answers.pop(0)
        return {t.topic: Future() if answer == "none" else _answer(answer) for t in new_topics}  # type: ignore[arg-type]


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


def test_a_create_the_cluster_did_not_answer_is_sent_again_and_an_existing_topic_counts_as_created(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_kafka, "CREATE_ANSWER_WAIT_S", 0.05)
    # Timed out, no answer at all, then "exists": the first request did create it.
    admin = CreateAnswers(KafkaError._TIMED_OUT, "none", KafkaError.TOPIC_ALREADY_EXISTS)
    waits: list[float] = []
    metadata = _metadata()
    created = ensure_topics(
        admin,  # type: ignore[arg-type]
        metadata,
        ["src"],
        True,
        3,
        1,
        stopped=lambda s: waits.append(s) or False,  # type: ignore[func-returns-value]
        max_backoff_s=1.5,
        attempts=None,
    )
    assert created == ["src"]
    assert admin.requests == [["src"], ["src"], ["src"]]
    assert waits == [1.0, 1.5]  # exponential backoff, capped


def test_a_create_the_cluster_refused_raises_at_once_naming_the_topic() -> None:
    admin = CreateAnswers(KafkaError.INVALID_REPLICATION_FACTOR)
    with pytest.raises(TopicMissingError, match=r"^cannot create topic 'src': error \d+$"):
        ensure_topics(admin, _metadata(), ["src"], True, 3, 3, attempts=None)  # type: ignore[arg-type]
    assert admin.requests == [["src"]]


def test_a_create_stops_retrying_when_stopped_or_after_its_attempts() -> None:
    admin = CreateAnswers(KafkaError._TRANSPORT, KafkaError._TRANSPORT)
    with pytest.raises(TopicMissingError, match=r"cannot create topic 'src'"):
        ensure_topics(admin, _metadata(), ["src"], True, 3, 1, attempts=2)  # type: ignore[arg-type]
    assert len(admin.requests) == 2
    admin = CreateAnswers(KafkaError._TRANSPORT)
    ensure_topics(admin, _metadata(), ["src"], True, 3, 1, stopped=lambda _s: True, attempts=None)  # type: ignore[arg-type]
    assert len(admin.requests) == 1


@pytest.mark.parametrize(
    ("declare", "name"),
    [
        (lambda app: app.handler(source="client events", sink="out"), "client events"),
        (lambda app: app.handler(source="in", sink="out/x"), "out/x"),
        (lambda app: app.handler(source="in", sink=_Topic("..")), ".."),
        (lambda app: app.handler(source="in", dlq="in dead"), "in dead"),
    ],
)
def test_a_topic_kafka_would_refuse_fails_the_declaration_naming_the_handler(declare: Any, name: str) -> None:
    from thimble.consumer import App
    from thimble.consumer.errors import HandlerSignatureError

    def handle(b: bytes) -> bytes:
        return b

    with pytest.raises(
        HandlerSignatureError, match=rf"handler \S*handle \(.*\.py:\d+\): '{name}' is not a Kafka topic name"
    ):
        declare(App("names"))(handle)


def test_a_dlq_suffix_that_makes_no_topic_name_is_refused() -> None:
    from thimble.common import ConfigError, load_settings
    from thimble.consumer import ConsumerSettings

    with pytest.raises(ConfigError, match=r"consumer\.dlq_suffix"):
        load_settings(ConsumerSettings, overrides={"consumer": {"dlq_suffix": "/dead"}})
    assert (
        load_settings(ConsumerSettings, overrides={"consumer": {"dlq_suffix": "_dlq-1"}}).consumer.dlq_suffix
        == "_dlq-1"
    )
