from pathlib import Path

import pytest
from pydantic import SecretStr

from thimble.common import ConfigError, Section, ThimbleSettings, load_settings
from thimble.common.config import check_topic_name

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("THIMBLE_") and name != "THIMBLE_RUN_DIR":
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "thimble.yaml"
    path.write_text(text)
    return path


def test_defaults_point_at_the_local_stack() -> None:
    settings = load_settings()
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert settings.spark.master == "local[2]"
    assert settings.online_store.url.startswith("redis://127.0.0.1")


def test_precedence_defaults_file_env_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(
        tmp_path,
        "kafka:\n  bootstrap_servers: file:1\nspark:\n  master: local[1]\nlogging:\n  level: DEBUG\n",
    )
    monkeypatch.setenv("THIMBLE_SPARK__MASTER", "env-master")
    monkeypatch.setenv("THIMBLE_LOGGING__LEVEL", "WARNING")
    settings = load_settings(
        config_file=path, overrides={"logging": {"level": "ERROR"}, "kafka": {"bootstrap_servers": None}}
    )
    assert settings.kafka.bootstrap_servers == "file:1"  # file beats default; a None flag is "not given"
    assert settings.spark.master == "env-master"  # env beats file
    assert settings.logging.level == "ERROR"  # flag beats env
    assert settings.spark.shuffle_partitions == 4  # untouched default


def test_config_file_from_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THIMBLE_CONFIG", str(write(tmp_path, "warehouse:\n  database: gold\n")))
    assert load_settings().warehouse.database == "gold"


def test_unknown_key_in_file_names_file_path_and_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, "kafka:\n  bootstrap_server: x:1\n")
    with pytest.raises(ConfigError) as err:
        load_settings(config_file=path)
    message = str(err.value)
    assert f"{path}: kafka.bootstrap_server: unknown key; did you mean 'bootstrap_servers'?" in message
    assert "Traceback" not in message


def test_unknown_section_suggests_the_closest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"warehose: unknown key; did you mean 'warehouse'\?"):
        load_settings(config_file=write(tmp_path, "warehose:\n  database: x\n"))


def test_bad_value_names_field_and_reason(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(
            config_file=write(tmp_path, "spark:\n  shuffle_partitions: zero\nmetrics:\n  port: 70000\n")
        )
    assert len(err.value.problems) == 2
    assert any("spark.shuffle_partitions: Input should be a valid integer" in p for p in err.value.problems)
    assert any("metrics.port: Input should be less than or equal to 65535" in p for p in err.value.problems)


def test_bad_environment_value_is_attributed_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THIMBLE_KAFKA__SECURITY_PROTOCOL", "CARRIER_PIGEON")
    with pytest.raises(ConfigError, match=r"environment \(THIMBLE_\*\) or flags: kafka.security_protocol"):
        load_settings()


@pytest.mark.parametrize(
    ("text", "reason"),
    [("kafka: [1, 2\n", "not valid YAML"), ("- a\n- b\n", "top level must be a mapping")],
)
def test_malformed_yaml(tmp_path: Path, text: str, reason: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_settings(config_file=path)
    assert str(path) in str(err.value)
    assert reason in str(err.value)


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError) as err:
        load_settings(config_file=path)
    assert str(err.value) == f"Invalid configuration in {path}:\n  not UTF-8 text (byte 0xff at position 0)"


def test_a_key_given_twice_is_a_config_error_not_the_first_dropped(tmp_path: Path) -> None:
    path = write(tmp_path, "kafka:\n  bootstrap_servers: a:1\nredis: {}\nkafka:\n  bootstrap_servers: b:1\n")
    with pytest.raises(ConfigError) as err:
        load_settings(config_file=path)
    assert err.value.problems == ["kafka: given twice (line 1, then line 4); YAML would keep only the last"]


def test_a_file_nested_too_deeply_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "kafka: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError) as err:  # not the parser's RecursionError
        load_settings(config_file=path)
    assert err.value.problems == ["nested too deeply to read"]


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_settings(config_file=tmp_path / "nope.yaml")


def test_kafka_client_config_passes_secrets_and_extras(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THIMBLE_KAFKA__SASL_PASSWORD", "s3cr3t-value")
    settings = load_settings(
        overrides={
            "kafka": {
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "PLAIN",
                "sasl_username": "u",
                "extra": {"linger.ms": 5},
            }
        }
    )
    assert isinstance(settings.kafka.sasl_password, SecretStr)
    assert "s3cr3t-value" not in repr(settings)
    conf = settings.kafka.client_config()
    assert conf["sasl.password"] == "s3cr3t-value"
    assert conf["linger.ms"] == 5
    assert conf["security.protocol"] == "SASL_SSL"


def test_packages_extend_settings_with_their_own_sections(tmp_path: Path) -> None:
    class ConsumerSection(Section):
        group_id: str = "default"

    class ConsumerSettings(ThimbleSettings):
        consumer: ConsumerSection = ConsumerSection()

    settings = load_settings(ConsumerSettings, config_file=write(tmp_path, "consumer:\n  group_id: g1\n"))
    assert settings.consumer.group_id == "g1"
    with pytest.raises(ConfigError, match="did you mean 'group_id'"):
        load_settings(ConsumerSettings, config_file=write(tmp_path, "consumer:\n  groupid: g1\n"))


def test_one_file_configures_every_package(tmp_path: Path) -> None:
    class ConsumerSection(Section):
        group_id: str = "default"

    class ConsumerSettings(ThimbleSettings):
        consumer: ConsumerSection = ConsumerSection()

    path = write(tmp_path, "consumer:\n  group_id: g1\nmodelops:\n  registry: /models\netl:\n  x: 1\n")
    assert load_settings(ConsumerSettings, config_file=path).consumer.group_id == "g1"
    assert load_settings(config_file=path).kafka.bootstrap_servers  # the base settings skip all three
    with pytest.raises(ConfigError, match="modelop: unknown key; did you mean 'modelops'"):
        load_settings(ConsumerSettings, config_file=write(tmp_path, "modelop:\n  registry: /m\n"))


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", "a b", "é", "t\n", "x" * 250])
def test_a_topic_name_kafka_would_refuse_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="is not a Kafka topic name"):
        check_topic_name(name)


@pytest.mark.parametrize("name", ["t", "client-events.v2", "_internal", "...", "x" * 249])
def test_a_topic_name_kafka_accepts_is_kept(name: str) -> None:
    assert check_topic_name(name) == name


@pytest.mark.parametrize(
    "servers", ["127.0.0.1:9092", "a:1, b:2", "SASL_SSL://broker-1.example:9093", "[::1]:9092", "kafka"]
)
def test_bootstrap_servers_take_host_port_lists(servers: str) -> None:
    assert (
        load_settings(
            ThimbleSettings, overrides={"kafka": {"bootstrap_servers": servers}}
        ).kafka.bootstrap_servers
        == servers
    )


@pytest.mark.parametrize("servers", ["not a host:port:x", "h:99999", "h:", "h:1,,h:2", "h:port"])
def test_a_bootstrap_server_that_is_not_host_port_is_one_error_naming_the_field(servers: str) -> None:
    with pytest.raises(ConfigError, match=r"kafka\.bootstrap_servers: .* is not host:port"):
        load_settings(ThimbleSettings, overrides={"kafka": {"bootstrap_servers": servers}})
