"""thimble-modelops settings: the shared Thimble sections plus a ``modelops`` section."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator

from thimble.common._paths import run_dir
from thimble.common.config import KafkaTopic, Section, ThimbleSettings, load_settings
from thimble.modelops._signing import MIN_KEY_BYTES

OVERRIDES_ENV = "THIMBLE_MODELOPS_OVERRIDES"  # JSON overrides handed from `serve` to its worker processes


def _default_registry() -> str:
    return str(run_dir() / "models")


class RolloutConfig(Section):
    """How one served alias shares its traffic with other versions of the same model."""

    canary: str | None = Field(default=None, description="alias (or version) answering a share of requests")
    canary_share: float = Field(default=0.0, ge=0, le=1, description="share of entities sent to the canary")
    shadow: str | None = Field(
        default=None, description="alias (or version) scoring every request, never answering"
    )
    entity_key: str | None = Field(
        default=None, description="input field the canary share hashes (default: the features' entity key)"
    )


class ServerConfig(Section):
    """The online prediction server."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, description="uvicorn worker processes (one per core)")
    models: list[str] = Field(default_factory=list, description="model references: name, name@alias, name@3")
    max_batch_size: int = Field(default=64, ge=1, description="most rows the model sees in one call")
    max_wait_ms: float = Field(default=0.0, ge=0, description="how long a batch waits for more requests")
    run_in_thread: bool = Field(default=False, description="run the model off the event loop (slow models)")
    auth_token: SecretStr | None = Field(
        default=None,
        description=f"require `Authorization: Bearer <token>`: a random secret of at least {MIN_KEY_BYTES} characters",
    )
    prediction_log_topic: KafkaTopic | None = Field(
        default=None, description="Kafka topic for prediction records"
    )
    prediction_log_queue: int = Field(default=100_000, ge=1, description="records held before dropping")
    prediction_log_flush_s: float = Field(default=10.0, ge=0, description="how long shutdown waits for Kafka")
    tracking_interval_s: float = Field(
        default=30.0, gt=0, description="how often serving metrics are recorded"
    )
    feature_timeout_ms: float = Field(
        default=200.0, gt=0, description="how long online feature lookups may take before a 503"
    )
    feature_hold_ms: float = Field(
        default=2.0,
        ge=0,
        le=1000,
        description="how long a batch waits for requests still reading online features (0: never)",
    )
    max_body_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1, description="largest request body accepted (else 413)"
    )
    max_rows: int = Field(default=10_000, ge=1, description="most rows in one request (else 413)")
    open_telemetry: bool = Field(
        default=False,
        description="FastAPI's OpenTelemetry spans, metrics and logs of each request, sent to the process's "
        "OpenTelemetry providers (off: the server's Prometheus metrics and logs cover each request, and a "
        "request does not pay FastAPI's check for providers)",
    )
    alias_poll_s: float = Field(
        default=5.0, ge=0, description="how often served aliases are re-read to follow moves (0: never)"
    )
    rollout: dict[str, RolloutConfig] = Field(
        default_factory=dict, description="canary and shadow per served reference, e.g. churn@prod"
    )
    prediction_log_spill_mb: float = Field(
        default=256.0,
        ge=0,
        description="records Kafka cannot take are kept in files under the run folder up to this size",
    )

    @field_validator("auth_token")
    @classmethod
    def _token_is_a_secret(cls, token: SecretStr | None) -> SecretStr | None:
        """An empty token (an unset variable in ``--auth-token "$TOKEN"``) must not turn auth off."""
        if token is not None and len(token.get_secret_value().encode()) < MIN_KEY_BYTES:
            raise ValueError(
                f"use a random secret of at least {MIN_KEY_BYTES} characters (--auth-token, "
                "THIMBLE_MODELOPS_AUTH_TOKEN), or leave it unset to serve without auth"
            )
        return token


class BatchConfig(Section):
    """Spark batch scoring."""

    max_records_per_batch: int = Field(
        default=50_000,
        ge=1,
        description="rows per Arrow batch given to the model: larger amortises per-batch work, smaller bounds memory",
    )


class ModelOpsConfig(Section):
    """Where models and their metrics live, and how they are served and batched."""

    registry: str = Field(
        default_factory=_default_registry, description="folder or fsspec URL of the registry"
    )
    registry_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec storage options of the registry, e.g. base_url and auth for webdav://",
    )
    tracking: str | None = Field(default=None, description="SQLite file of the metrics store")
    signing_key: SecretStr | None = Field(
        default=None,
        description="secret that signs saved models (HMAC-SHA256); loads refuse models that do not verify",
    )
    previous_signing_keys: list[SecretStr] = Field(
        default_factory=list,
        description="keys that signed models before signing_key: still verified (by key id), never used to sign",
    )
    allow_unsigned: bool = Field(
        default=False, description="with a signing key, still load models saved without a signature"
    )
    sample_rows: int = Field(default=1000, ge=1, description="input rows kept with a saved model")
    server: ServerConfig = Field(default_factory=ServerConfig)
    batch: BatchConfig = Field(default_factory=BatchConfig)

    @field_validator("registry")
    @classmethod
    def _registry_is_named(cls, registry: str) -> str:
        """An empty registry (an unset variable in ``--registry "$REG"``) must not become the current folder."""
        if not registry.strip():
            raise ValueError(
                "give a folder or an fsspec URL (--registry, THIMBLE_MODELOPS__REGISTRY); an empty one "
                "would be the current folder"
            )
        return registry

    def tracking_path(self) -> Path:
        """The metrics store: configured, else next to a local registry, else under the run folder."""
        if self.tracking:
            return Path(self.tracking)
        if "://" not in self.registry or self.registry.startswith("file://"):
            return Path(self.registry.removeprefix("file://")) / "_tracking.sqlite"
        return run_dir() / "modelops" / "tracking.sqlite"


class ModelOpsSettings(ThimbleSettings):
    """Thimble settings with the ``modelops`` section (env: ``THIMBLE_MODELOPS__REGISTRY`` ...)."""

    modelops: ModelOpsConfig = Field(default_factory=ModelOpsConfig)


def load_modelops_settings(
    config_file: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> ModelOpsSettings:
    """Load :class:`ModelOpsSettings` with Thimble's precedence (defaults < file < env < overrides)."""
    return load_settings(ModelOpsSettings, config_file=config_file, overrides=overrides)
