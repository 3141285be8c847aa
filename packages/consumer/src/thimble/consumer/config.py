"""The ``consumer`` configuration section and the settings class that adds it to Thimble's shared ones."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from thimble.common.config import Section, ThimbleSettings
from thimble.common.validation import json_kind

_IN_ORDER = "a leader change cannot reorder two requests and drop the first"
# librdkafka properties the guarantees rest on: thimble-consumer sets them, and ``*_extra`` may not.
_OWNED: dict[str, dict[str, str]] = {
    "consumer_extra": {
        "enable.auto.offset.store": "an offset is stored only once its message is processed",
        "enable.auto.commit": "offsets are committed only once processed",
        "isolation.level": "records of aborted transactions are never processed",
        "group.id": "set consumer.group_id (--group-id) instead",
    },
    "producer_extra": {
        "enable.idempotence": "outputs are written by an idempotent producer",
        "acks": "outputs are acknowledged by every in-sync replica",
        "request.required.acks": "outputs are acknowledged by every in-sync replica",
        "transactional.id": "exactly-once gives each process its own",
        "max.in.flight.requests.per.connection": _IN_ORDER,
        "max.in.flight": _IN_ORDER,
    },
}


class ConsumerConfig(Section):
    """How the consumer polls, batches, retries, dead-letters and shuts down."""

    group_id: str | None = Field(
        default=None, min_length=1, description="Consumer group; default: the app's name."
    )
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    poll_batch_size: int = Field(default=500, ge=1, description="Messages taken from librdkafka per poll.")
    batch_size: int = Field(default=500, ge=1, description="Default size of a batch handler's batches.")
    batch_wait_ms: int = Field(
        default=200, ge=0, description="Default wait before a partial batch is handled."
    )
    max_retries: int = Field(
        default=3, ge=0, description="Retries of a retriable failure before dead-lettering."
    )
    retry_backoff_ms: int = Field(default=100, ge=0)
    retry_backoff_max_ms: int = Field(default=10_000, ge=0)
    dlq_suffix: str = Field(
        default=".dlq",
        pattern=r"^[A-Za-z0-9._-]+$",
        description="Appended to a source topic's name: letters, digits, '.', '_' and '-'.",
    )
    exactly_once: bool = Field(
        default=False, description="Topic-to-topic exactly-once via Kafka transactions."
    )
    max_poll_interval_ms: int = Field(default=300_000, ge=1)
    session_timeout_ms: int = Field(
        default=45_000, ge=1, description="Classic protocol only; the broker sets it for `consumer`."
    )
    group_protocol: Literal["classic", "consumer"] = Field(
        default="classic",
        description="`consumer`: the consumer group protocol of Kafka 4 (KIP-848), assignments made by the broker.",
    )
    drain_timeout_s: float = Field(default=15.0, gt=0, description="Bound of the shutdown drain.")
    queued_batches: int = Field(
        default=0,
        ge=0,
        description="Polled batches waiting for the handler before partitions pause; 0: the next batch is "
        "polled when the handler is ready for it.",
    )
    create_topics: bool = False
    topic_partitions: int = Field(
        default=3, ge=1, description="Partitions of topics created by the consumer."
    )
    topic_replication: int = Field(default=1, ge=1)
    landing_batch_rows: int = Field(default=50_000, ge=1)
    landing_flush_interval_s: float = Field(default=30.0, gt=0)
    broker_retry_max_s: float = Field(
        default=30.0, gt=0, description="Cap of the reconnect backoff at start."
    )
    consumer_extra: dict[str, str | int | float | bool] = Field(default_factory=dict)
    producer_extra: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("consumer_extra", "producer_extra", mode="before")
    @classmethod
    def _raw_librdkafka_settings(cls, value: Any, info: ValidationInfo) -> Any:
        """One line per problem: a property thimble owns, or a value librdkafka cannot take."""
        if not isinstance(value, dict):
            return value
        owned = _OWNED[str(info.field_name)]
        for name, setting in value.items():
            if name in owned:
                raise ValueError(f"{name!r} is set by thimble-consumer ({owned[name]}); remove it")
            if not isinstance(setting, str | int | float | bool):
                raise ValueError(f"{name!r} must be a string, a number or a bool, not {json_kind(setting)}")
        return value


class ConsumerSettings(ThimbleSettings):
    """Thimble's shared settings plus the ``consumer`` section (``THIMBLE_CONSUMER__*``)."""

    consumer: ConsumerConfig = Field(default_factory=ConsumerConfig)
