"""One configuration loader for every Thimble package.

Precedence, lowest first: defaults < YAML file (``--config`` or ``THIMBLE_CONFIG``) < environment
(``THIMBLE_`` prefix, nested with ``__``, e.g. ``THIMBLE_KAFKA__BOOTSTRAP_SERVERS``) < explicit overrides
(CLI flags). Packages extend :class:`ThimbleSettings` with sections of their own.
"""

from __future__ import annotations

import os
import re
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from thimble.common._paths import run_dir
from thimble.common.errors import ConfigError
from thimble.common.logging import register_secret
from thimble.common.validation import environment_problems, format_location, validation_problems

CONFIG_ENV_VAR = "THIMBLE_CONFIG"
# One config file may configure every Thimble package; each loader skips the other packages' sections.
PACKAGE_SECTIONS = frozenset({"consumer", "etl", "modelops"})


_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


def check_topic_name(name: str) -> str:
    """``name`` when Kafka accepts it as a topic name; else ValueError saying what a name may hold."""
    if not _TOPIC_NAME.fullmatch(name) or name in (".", ".."):
        raise ValueError(
            f"{name[:80]!r} is not a Kafka topic name (letters, digits, '.', '_' and '-', "
            "at most 249 characters, not '.' or '..')"
        )
    return name


KafkaTopic = Annotated[str, AfterValidator(check_topic_name)]
"""A config field holding a Kafka topic name, checked as the broker would."""


class Section(BaseModel):
    """Base of every configuration section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


CONSUMER_DEFAULTS: dict[str, Any] = {
    # librdkafka waits this long (its default: 1,000 ms) before it fetches again for a partition whose
    # local queue filled; a consumer that empties its queue faster than that would sit idle.
    "fetch.queue.backoff.ms": 20,
}
"""librdkafka settings every Thimble consumer starts from; a user's settings win over them."""


_BOOTSTRAP_SERVER = re.compile(
    r"(?:[A-Za-z_]+://)?(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(?P<port>[0-9]{1,5}))?"
)


class KafkaConfig(Section):
    """How to reach Kafka. ``extra`` passes librdkafka settings through unchanged."""

    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: SecretStr | None = None
    extra: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_ports(cls, servers: str) -> str:
        """A comma-separated list of ``host[:port]`` (optionally ``protocol://``); anything else would be
        retried for ever as an unreachable broker."""
        for server in servers.split(","):
            match = _BOOTSTRAP_SERVER.fullmatch(server.strip())
            if match is None or (match["port"] is not None and not 0 < int(match["port"]) < 65536):
                raise ValueError(f"{server.strip()!r} is not host:port (a list is comma-separated)")
        return servers

    def client_config(self) -> dict[str, Any]:
        """The librdkafka configuration for a confluent-kafka client, secrets included."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        optional = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password.get_secret_value() if self.sasl_password else None,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "ssl.key.password": self.ssl_key_password.get_secret_value() if self.ssl_key_password else None,
        }
        conf.update({k: v for k, v in optional.items() if v is not None})
        conf.update(self.extra)
        return conf


SPARK_CONNECT_SCHEME = "sc://"
SPARK_CONNECT_DEFAULT_PORT = 15002


class SparkConfig(Section):
    """The Spark session: a Spark Connect server (``remote``), else an in-process ``master``.

    ``remote`` (``sc://host:port``) reaches a long-lived Spark Connect server, which owns the jars,
    the warehouse's metastore and the memory settings; without it Thimble starts Spark in its own
    process with ``master``, ``driver_memory`` and ``jars`` (default: the locally resolved ones).
    """

    remote: str | None = None
    master: str = "local[2]"
    app_name: str = "thimble"
    driver_memory: str = "2g"
    shuffle_partitions: int = Field(default=4, ge=1)
    jars: list[str] = Field(default_factory=list)
    conf: dict[str, str] = Field(default_factory=dict)

    @field_validator("remote")
    @classmethod
    def _connect_url(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        value = value.strip()
        if connect_address(value) is None:
            raise ValueError(f"a Spark Connect address looks like sc://host:15002, not {value!r}")
        return value


def connect_address(url: str) -> tuple[str, int] | None:
    """``(host, port)`` of a Spark Connect URL (``sc://host[:port][/;param=value…]``), None if malformed."""
    if not url.startswith(SPARK_CONNECT_SCHEME):
        return None
    authority = url.removeprefix(SPARK_CONNECT_SCHEME).split("/", 1)[0]
    host, _, port_text = authority.partition(":")
    if not host or any(ch.isspace() for ch in host):
        return None
    if not port_text:
        return host, SPARK_CONNECT_DEFAULT_PORT
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        return None
    return host, int(port_text)


class WarehouseConfig(Section):
    """Where warehouse tables, landing files and the metastore live."""

    location: str = Field(default_factory=lambda: str(run_dir() / "warehouse"))
    landing: str = Field(default_factory=lambda: str(run_dir() / "landing"))
    metastore: str = Field(default_factory=lambda: str(run_dir() / "metastore"))
    database: str = "warehouse"
    table_format: Literal["delta"] = "delta"


class OnlineStoreConfig(Section):
    """The online feature store (Redis)."""

    url: str = "redis://127.0.0.1:6379/0"
    password: SecretStr | None = None
    key_prefix: str = "features"


class MetricsConfig(Section):
    """Prometheus exposition: an HTTP port for services, a textfile or pushgateway for batch jobs."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9400, ge=0, le=65535)
    textfile_dir: str | None = None
    pushgateway_url: str | None = None


class LoggingConfig(Section):
    """Log level and format (``auto``: console on a TTY, JSON lines otherwise)."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["auto", "json", "console"] = "auto"


_file_values: ContextVar[dict[str, Any] | None] = ContextVar("thimble_config_file_values", default=None)


class _YamlFileSource(PydanticBaseSettingsSource):
    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return (_file_values.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_file_values.get() or {})


class ThimbleSettings(BaseSettings):
    """The sections every Thimble process shares. Subclass to add a package's own sections."""

    model_config = SettingsConfigDict(
        env_prefix="THIMBLE_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    spark: SparkConfig = Field(default_factory=SparkConfig)
    warehouse: WarehouseConfig = Field(default_factory=WarehouseConfig)
    online_store: OnlineStoreConfig = Field(default_factory=OnlineStoreConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlFileSource(settings_cls))


SettingsT = TypeVar("SettingsT", bound=ThimbleSettings)


def read_yaml_file(path: Path) -> dict[str, Any]:
    """Read a YAML file whose top level is a mapping; raise :class:`ConfigError` naming the file otherwise.

    A key given twice in one mapping is an error too (YAML would keep the last silently: a second
    ``validate:`` section would drop the first one's rules), as is nesting too deep to read.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read the file: {exc.strerror or exc}"], source=str(path)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [f"not UTF-8 text (byte {exc.object[exc.start]:#04x} at position {exc.start})"], source=str(path)
        ) from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        duplicates = _duplicate_keys(node) if node is not None else []
        if duplicates:
            raise ConfigError(duplicates, source=str(path))
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{where}not valid YAML ({problem})"], source=str(path)) from None
    except RecursionError:
        raise ConfigError(["nested too deeply to read"], source=str(path)) from None
    finally:
        loader.dispose()
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(["the top level must be a mapping of sections"], source=str(path))
    return data


def _duplicate_keys(root: yaml.Node) -> list[str]:
    """One problem per key given twice in one mapping of a YAML document (its composed nodes)."""
    problems: list[str] = []
    seen: set[int] = set()  # a node an alias repeats is walked once

    def walk(node: yaml.Node, path: list[int | str]) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            lines: dict[tuple[str, str], int] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    line = key.start_mark.line + 1
                    first = lines.get((key.tag, key.value))
                    lines.setdefault((key.tag, key.value), line)
                    if first is not None:
                        problems.append(
                            f"{format_location([*path, key.value])}: given twice (line {first}, then line "
                            f"{line}); YAML would keep only the last"
                        )
                walk(value, [*path, key.value if isinstance(key, yaml.ScalarNode) else "?"])
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, [*path, i])

    walk(root, [])
    return problems


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            nested = _drop_none(value)
            if nested:
                out[key] = nested
        elif value is not None:
            out[key] = value
    return out


def _origin(loc: tuple[int | str, ...], file_values: dict[str, Any], path: Path | None) -> str:
    """Which source a bad value came from: the YAML file when it holds that path, else the environment."""
    node: Any = file_values
    for part in loc:
        in_mapping = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and part < len(node)
        if in_mapping or in_list:
            node = node[part]
        else:
            return "environment (THIMBLE_*) or flags"
    return str(path)


def _register_secrets(model: BaseModel) -> None:
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr):
            register_secret(value.get_secret_value())
        elif isinstance(value, BaseModel):
            _register_secrets(value)


def load_settings(
    settings_cls: type[SettingsT] = ThimbleSettings,  # type: ignore[assignment]
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> SettingsT:
    """Load settings with Thimble's precedence; raise :class:`ConfigError` naming every problem.

    ``overrides`` are CLI flags, nested by section (``{"kafka": {"bootstrap_servers": ...}}``);
    ``None`` values mean "flag not given" and are ignored.
    """
    path_text = str(config_file) if config_file is not None else os.environ.get(CONFIG_ENV_VAR)
    path = Path(path_text) if path_text else None
    file_values = read_yaml_file(path) if path else {}
    foreign = PACKAGE_SECTIONS - set(settings_cls.model_fields)
    file_values = {key: value for key, value in file_values.items() if key not in foreign}
    token = _file_values.set(file_values)
    try:
        settings = settings_cls(**_drop_none(overrides or {}))
    except SettingsError as exc:
        raise ConfigError(environment_problems(settings_cls, os.environ) or [str(exc)]) from None
    except ValidationError as exc:
        problems = validation_problems(exc, settings_cls, top_level_names=PACKAGE_SECTIONS)
        origins = [_origin(item["loc"], file_values, path) for item in exc.errors(include_url=False)]
        raise ConfigError(
            [f"{origin}: {problem}" for origin, problem in zip(origins, problems, strict=True)]
        ) from None
    finally:
        _file_values.reset(token)
    _register_secrets(settings)
    return settings
