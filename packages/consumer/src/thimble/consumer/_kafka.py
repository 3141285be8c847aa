"""Kafka client configuration and admin chores: reach the broker, check or create topics."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from thimble.common.logging import get_logger
from thimble.consumer.config import ConsumerSettings
from thimble.consumer.errors import ServiceUnavailableError, TopicMissingError

log = get_logger(__name__)
kafka_log = logging.getLogger("thimble.consumer.librdkafka")


def consumer_config(settings: ConsumerSettings, group_id: str, client_id: str) -> dict[str, Any]:
    """At-least-once consumer: auto-commit of explicitly stored offsets only, cooperative-sticky."""
    cfg = settings.consumer
    return {
        **settings.kafka.client_config(),
        "group.id": group_id,
        "client.id": client_id,
        "enable.auto.commit": not cfg.exactly_once,
        "enable.auto.offset.store": False,
        "auto.commit.interval.ms": 1000,
        "auto.offset.reset": cfg.auto_offset_reset,
        "partition.assignment.strategy": "cooperative-sticky",
        "max.poll.interval.ms": cfg.max_poll_interval_ms,
        "session.timeout.ms": cfg.session_timeout_ms,
        "isolation.level": "read_committed",
        "logger": kafka_log,
        **cfg.consumer_extra,
    }


def producer_config(
    settings: ConsumerSettings, client_id: str, transactional_prefix: str | None = None
) -> dict[str, Any]:
    """Idempotent producer with ``acks=all``; transactional when ``transactional_prefix`` is given."""
    conf: dict[str, Any] = {
        **settings.kafka.client_config(),
        "client.id": client_id,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "compression.type": "lz4",
        "logger": kafka_log,
    }
    if transactional_prefix is not None:
        # Stable across restarts of the same worker, so init_transactions fences and aborts the
        # transaction a crashed predecessor left open instead of waiting for it to time out.
        conf["transactional.id"] = transactional_prefix
        conf["transaction.timeout.ms"] = 30_000
    conf.update(settings.consumer.producer_extra)
    return conf


def admin_client(settings: ConsumerSettings) -> AdminClient:
    conf: dict[str, Any] = {**settings.kafka.client_config(), "logger": kafka_log}
    return AdminClient(conf)


def wait_for_broker(
    admin: AdminClient,
    bootstrap: str,
    stopped: Callable[[float], bool],
    max_backoff_s: float,
    attempts: int | None = None,
) -> bool:
    """Retry a metadata request with exponential backoff until it answers; ``False`` if stopped first."""
    delay, attempt = 1.0, 0
    while True:
        attempt += 1
        try:
            if admin.list_topics(timeout=5).brokers:
                return True
            problem = "no broker in metadata"
        except KafkaException as exc:
            problem = str(exc.args[0].str() if exc.args else exc)
        if attempts is not None and attempt >= attempts:
            raise ServiceUnavailableError(f"Kafka at {bootstrap} is unreachable ({problem})")
        log.warning(
            "Kafka unreachable, retrying",
            extra={"bootstrap_servers": bootstrap, "error": problem, "retry_in_s": delay},
        )
        if stopped(delay):
            return False
        delay = min(delay * 2, max_backoff_s)


def ensure_topics(
    admin: AdminClient, topics: Iterable[str], create: bool, partitions: int, replication: int
) -> list[str]:
    """Check ``topics`` exist; create the missing ones when ``create``, else raise naming them. Returns created."""
    wanted = list(dict.fromkeys(topics))
    existing = admin.list_topics(timeout=10).topics
    missing = [t for t in wanted if t not in existing or existing[t].error is not None]
    if not missing:
        return []
    if not create:
        raise TopicMissingError(
            f"topic(s) {', '.join(repr(t) for t in missing)} do not exist; create them or pass --create-topics"
        )
    futures = admin.create_topics([NewTopic(t, partitions, replication) for t in missing])
    for topic, future in futures.items():
        try:
            future.result(timeout=30)
        except KafkaException as exc:
            if exc.args and exc.args[0].name() == "TOPIC_ALREADY_EXISTS":
                continue
            raise TopicMissingError(
                f"cannot create topic {topic!r}: {exc.args[0].str() if exc.args else exc}"
            ) from None
        log.info("created topic", extra={"topic": topic, "partitions": partitions})
    return missing
