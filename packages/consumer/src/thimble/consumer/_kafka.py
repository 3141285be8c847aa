"""Kafka client configuration and admin chores: reach the broker, check or create topics."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import IO, Any, Literal, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._metadata import ClusterMetadata
from confluent_kafka.cimpl import NewTopic

from thimble.common.config import CONSUMER_DEFAULTS
from thimble.common.logging import get_logger
from thimble.consumer.config import ConsumerSettings
from thimble.consumer.errors import ConsumerError, ServiceUnavailableError, TopicMissingError

log = get_logger(__name__)
kafka_log = logging.getLogger("thimble.consumer.librdkafka")
TRANSACTION_TIMEOUT_MS = 30_000
C = TypeVar("C")


def kafka_client(
    kind: Callable[[dict[str, Any]], C],
    conf: dict[str, Any],
    settings: ConsumerSettings,
    extra: Literal["producer_extra", "consumer_extra"] | None = None,
) -> C:
    """``kind(conf)`` (a producer, consumer or admin client); a configuration librdkafka refuses (an
    unknown property, a bad value, an unreadable certificate) raises a one-line :class:`ConsumerError`
    naming the setting it came from (``consumer.<extra>`` first, then the ``kafka`` section)."""
    try:
        return kind(conf)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        if not isinstance(err, KafkaError) or err.code() != KafkaError._INVALID_ARG:
            raise
        raise ConsumerError(_refused_setting(err.str(), settings, extra)) from None


# librdkafka names a property it refuses by its canonical name; users often write these aliases.
_ALIASES = {
    "request.required.acks": "acks",
    "queue.buffering.max.ms": "linger.ms",
    "message.timeout.ms": "delivery.timeout.ms",
    "metadata.broker.list": "bootstrap.servers",
    "compression.codec": "compression.type",
    "batch.num.messages": "batch.size",
}


def _refused_setting(message: str, settings: ConsumerSettings, extra: str | None) -> str:
    """librdkafka's refusal of a configuration, led by the setting that holds the property it names."""
    detail = re.sub(r"^Failed to create [\w ]+: ", "", message)
    named = re.search(r'"([\w.-]+)"', detail) or re.match(r"([\w.-]+) failed", detail)
    prop = named.group(1) if named else None
    where = "the Kafka client configuration"
    extras: dict[str, Any] = getattr(settings.consumer, extra) if extra else {}
    given = [p for p in (prop, _ALIASES.get(prop or "")) if p is not None and p in extras]
    if given:
        where = f"consumer.{extra}[{given[0]!r}]"
    elif prop is not None and prop.replace(".", "_") in type(settings.kafka).model_fields:
        where = f"kafka.{prop.replace('.', '_')}"
    return f"{where}: {detail}"


def consumer_config(settings: ConsumerSettings, group_id: str, client_id: str) -> dict[str, Any]:
    """At-least-once consumer: auto-commit of explicitly stored offsets only, incremental assignments.

    The classic protocol assigns cooperative-sticky; the consumer protocol (KIP-848) is incremental by
    design and its session timeout and assignor live on the broker, so librdkafka refuses them here.
    """
    cfg = settings.consumer
    group: dict[str, Any] = (
        {"group.protocol": "consumer"}
        if cfg.group_protocol == "consumer"
        else {
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": cfg.session_timeout_ms,
        }
    )
    return {
        **CONSUMER_DEFAULTS,
        **settings.kafka.client_config(),
        "group.id": group_id,
        "client.id": client_id,
        "enable.auto.commit": not cfg.exactly_once,
        "enable.auto.offset.store": False,
        "auto.commit.interval.ms": 1000,
        "auto.offset.reset": cfg.auto_offset_reset,
        **group,
        "max.poll.interval.ms": cfg.max_poll_interval_ms,
        "isolation.level": "read_committed",
        "logger": kafka_log,
        **cfg.consumer_extra,
    }


def producer_config(
    settings: ConsumerSettings, client_id: str, transactional_id: str | None = None
) -> dict[str, Any]:
    """Idempotent producer with ``acks=all``; transactional when ``transactional_id`` is given."""
    conf: dict[str, Any] = {
        **settings.kafka.client_config(),
        "client.id": client_id,
        "acks": "all",
        "enable.idempotence": True,
        # One request in flight per broker: a broker accepts any first sequence number from a producer it
        # holds no state for on a partition (Kafka 4.5 refuses it only where no record was ever written),
        # so when a new leader handles two requests out of order, the earlier one is dropped and still
        # reported delivered.
        "max.in.flight.requests.per.connection": 1,
        "linger.ms": 5,
        "compression.type": "lz4",
        "logger": kafka_log,
    }
    if transactional_id is not None:
        conf["transactional.id"] = transactional_id
        conf["transaction.timeout.ms"] = TRANSACTION_TIMEOUT_MS
    conf.update(settings.consumer.producer_extra)
    return conf


class HostSlot:
    """The lowest slot number of a consumer group that no other live process on this host holds.

    A slot is an exclusive ``flock`` on a file under the temporary folder, released by the kernel when
    the process ends however it ends. Two processes of one group on one host thus never share a slot,
    while a process restarted after a crash takes its predecessor's slot again.
    """

    def __init__(self, group_id: str, folder: Path | None = None, max_slots: int = 4096) -> None:
        folder = folder or Path(tempfile.gettempdir()) / f"thimble-consumer-{os.getuid()}"
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConsumerError(f"cannot create the slot folder {folder}: {exc.strerror}") from None
        group = hashlib.sha256(group_id.encode()).hexdigest()[:16]  # the group id never becomes a path
        for number in range(max_slots):
            file = (folder / f"slot-{group}-{number}.lock").open("a")
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                file.close()
                continue
            self.number = number
            self._file: IO[str] | None = file
            return
        raise ConsumerError(f"{max_slots} processes of group {group_id!r} already run on this host")

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def transactional_id(group_id: str, slot: HostSlot) -> str:
    """Unique among the live processes of the group (host and slot); a restart reuses its predecessor's,
    so ``init_transactions`` aborts the transaction a crashed predecessor left open at once. Zombies are
    fenced by the group generation (``send_offsets_to_transaction`` with the group metadata)."""
    return f"{group_id}-{socket.gethostname()}-{slot.number}"


# Answers of a coordinator (group or transaction) that is moving or loading: asked again.
COORDINATOR_MOVING = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    }
)
# ... and a transaction holding offsets of the partition, still open.
_COMMITTED_RETRIED = COORDINATOR_MOVING | {KafkaError.UNSTABLE_OFFSET_COMMIT}


def committed_offsets(
    consumer: Consumer, tps: list[TopicPartition], timeout_s: float
) -> list[TopicPartition]:
    """The group's committed offsets of ``tps`` (``OFFSET_INVALID`` where none was committed), asked
    again while the answer is retriable, until ``timeout_s``.

    Raises :class:`KafkaException` when any partition comes back with an error of its own: its offset
    then says nothing, and reading it as "none committed" would start the partition over.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            offsets = list(consumer.committed(tps, timeout=max(deadline - time.monotonic(), 0.1)))
            failed = next((tp.error for tp in offsets if tp.error is not None), None)
            if failed is not None:
                raise KafkaException(failed)
            return offsets
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            retried = isinstance(err, KafkaError) and (err.retriable() or err.code() in _COMMITTED_RETRIED)
            if not retried or time.monotonic() >= deadline:
                raise
            time.sleep(0.1)


def admin_client(settings: ConsumerSettings) -> AdminClient:
    conf: dict[str, Any] = {**settings.kafka.client_config(), "logger": kafka_log}
    return kafka_client(AdminClient, conf, settings)


class Backoff:
    """Exponential backoff between attempts at start: 1 s, doubling up to ``max_s``; ``attempts`` bounds
    them when given, ``stopped(delay)`` waits and tells whether the consumer was stopped meanwhile."""

    def __init__(self, stopped: Callable[[float], bool], max_s: float, attempts: int | None) -> None:
        self.stopped, self.max_s, self.attempts = stopped, max_s, attempts
        self.delay, self.attempt = 1.0, 0

    def spent(self) -> bool:
        """Count a failed attempt; whether it was the last one allowed."""
        self.attempt += 1
        return self.attempts is not None and self.attempt >= self.attempts

    def wait(self, message: str, **extra: Any) -> bool:
        """Log the retry, wait for it; ``False`` when stopped meanwhile."""
        log.warning(message, extra={**extra, "retry_in_s": self.delay})
        if self.stopped(self.delay):
            return False
        self.delay = min(self.delay * 2, self.max_s)
        return True


def wait_for_broker(
    admin: AdminClient,
    bootstrap: str,
    stopped: Callable[[float], bool],
    max_backoff_s: float,
    attempts: int | None = None,
) -> ClusterMetadata | None:
    """The cluster's metadata, asked again with exponential backoff until it answers; ``None`` if stopped
    first. Raises :class:`ServiceUnavailableError` after ``attempts`` failed requests, when given."""
    backoff = Backoff(stopped, max_backoff_s, attempts)
    while True:
        try:
            metadata = admin.list_topics(timeout=5)
            if metadata.brokers:
                return metadata
            problem = "no broker in metadata"
        except KafkaException as exc:
            problem = str(exc.args[0].str() if exc.args else exc)
        if backoff.spent():
            raise ServiceUnavailableError(f"Kafka at {bootstrap} is unreachable ({problem})")
        if not backoff.wait("Kafka unreachable, retrying", bootstrap_servers=bootstrap, error=problem):
            return None


_UNKNOWN_TOPIC = KafkaError.UNKNOWN_TOPIC_OR_PART
_DENIED = KafkaError.TOPIC_AUTHORIZATION_FAILED


def _code(error: KafkaError | None) -> int | None:
    return error.code() if error is not None else None


def missing_topics(metadata: ClusterMetadata, topics: Iterable[str]) -> list[str]:
    """The ``topics`` that ``metadata`` says do not exist (any other error of a listed topic, such as a
    leader being elected, says nothing of whether it exists)."""
    existing = metadata.topics
    return [t for t in topics if t not in existing or _code(existing[t].error) == _UNKNOWN_TOPIC]


def ensure_topics(
    admin: AdminClient,
    metadata: ClusterMetadata,
    topics: Iterable[str],
    create: bool,
    partitions: int,
    replication: int,
    *,
    stopped: Callable[[float], bool] = lambda _s: False,
    max_backoff_s: float = 30.0,
    attempts: int | None = 1,
) -> list[str]:
    """Check ``topics`` exist in ``metadata`` (from :func:`wait_for_broker`, not asked again: a broker
    lost in between must not fail the start); create the missing ones when ``create``, else raise naming
    them. Returns created (see :func:`create_topics` for the other arguments)."""
    wanted = list(dict.fromkeys(topics))
    existing = metadata.topics
    denied = [t for t in wanted if t in existing and _code(existing[t].error) == _DENIED]
    if denied:
        raise ConsumerError(f"not authorized to use topic(s) {', '.join(repr(t) for t in denied)}")
    missing = missing_topics(metadata, wanted)
    if not missing:
        return []
    if not create:
        raise TopicMissingError(
            f"topic(s) {', '.join(repr(t) for t in missing)} do not exist; create them or pass --create-topics"
        )
    create_topics(admin, missing, partitions, replication, stopped, max_backoff_s, attempts)
    return missing


# Answers to a topic creation that say nothing of the request itself: the cluster is unreachable or
# busy. The request is sent again; if the first one did create the topic, the answer is then "exists".
_CREATE_RETRIED = frozenset(
    {
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NOT_CONTROLLER,
    }
)
CREATE_REQUEST_TIMEOUT_S = 15.0
CREATE_ANSWER_WAIT_S = CREATE_REQUEST_TIMEOUT_S + 5.0  # the client's own timeout answers first


def create_topics(
    admin: AdminClient,
    topics: list[str],
    partitions: int,
    replication: int,
    stopped: Callable[[float], bool],
    max_backoff_s: float,
    attempts: int | None,
) -> None:
    """Create ``topics``; a topic that exists already counts as created.

    A request the cluster did not answer (a broker lost, a controller moving) is sent again with
    exponential backoff, until ``stopped(delay)`` is true or after ``attempts`` requests, when given;
    a refusal (a policy, a replication factor above the brokers, a denied create) raises at once, naming
    the topic. Raises :class:`TopicMissingError`.
    """
    backoff, remaining = Backoff(stopped, max_backoff_s, attempts), list(topics)
    while remaining:
        futures = admin.create_topics(
            [NewTopic(t, partitions, replication) for t in remaining],
            request_timeout=CREATE_REQUEST_TIMEOUT_S,
        )
        unanswered: dict[str, str] = {}
        for topic, future in futures.items():
            try:
                future.result(timeout=CREATE_ANSWER_WAIT_S)
            except FutureTimeout:
                unanswered[topic] = "no answer"
                continue
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                code = err.code() if isinstance(err, KafkaError) else None
                problem = err.str() if isinstance(err, KafkaError) else str(exc)
                if code == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue
                if code in _CREATE_RETRIED or (isinstance(err, KafkaError) and err.retriable()):
                    unanswered[topic] = problem
                    continue
                raise TopicMissingError(f"cannot create topic {topic!r}: {problem}") from None
            log.info("created topic", extra={"topic": topic, "partitions": partitions})
        remaining = [t for t in remaining if t in unanswered]
        if not remaining:
            return
        first = unanswered[remaining[0]]
        if backoff.spent():
            raise TopicMissingError(f"cannot create topic {remaining[0]!r}: {first}")
        if not backoff.wait("creating topics failed, retrying", topics=remaining, error=first):
            return
