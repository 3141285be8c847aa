"""CLI errors that need no broker: app paths, describe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from thimble.consumer._loader import load_app
from thimble.consumer.cli import app as cli
from thimble.consumer.errors import AppLoadError

from .conftest import CLI_APP

pytestmark = pytest.mark.unit

runner = CliRunner()


@pytest.mark.parametrize(
    ("ref", "needle"),
    [
        ("features", "must look like 'module:attr'"),
        ("no_such_module_xyz:app", "no module named 'no_such_module_xyz'"),
        (CLI_APP.replace(":app", ":nope"), "has no attribute 'nope'; apps it defines: app"),
        (CLI_APP.replace(":app", ":SRC"), "is a str, not a thimble.consumer.App"),
        ("missing/file.py:app", "no such file"),
    ],
)
def test_wrong_app_paths(ref: str, needle: str) -> None:
    with pytest.raises(AppLoadError, match=needle):
        load_app(ref)
    result = runner.invoke(cli, ["run", ref])
    assert result.exit_code == 2
    assert needle in result.output
    assert "Traceback" not in result.output


def test_broken_handler_in_app_module(tmp_path: Path) -> None:
    module = tmp_path / "broken_app.py"
    module.write_text(
        "from thimble.consumer import App\napp = App('x')\n@app.handler(source='a')\ndef f(x): ...\n"
    )
    result = runner.invoke(cli, ["describe", f"{module}:app"])
    assert result.exit_code == 2
    assert "parameter 'x' has no type annotation" in result.output
    assert "broken_app.py:3" in result.output


def test_describe_json() -> None:
    result = runner.invoke(cli, ["describe", CLI_APP, "--json"])
    assert result.exit_code == 0, result.output
    info = orjson.loads(result.stdout)
    [handler] = info["handlers"]
    assert info["app"] == "consumer-cli-test"
    assert handler["name"] == "handle"
    assert handler["input_schema"]["properties"]["id"]["type"] == "integer"
    assert handler["output_schema"]["title"] == "Result"
    assert handler["dead_letter_topics"] == ["src.dlq"]
    assert runner.invoke(cli, ["describe", CLI_APP]).exit_code == 0


def test_describe_prints_type_names_as_written(tmp_path: Path) -> None:
    module = tmp_path / "typed_app.py"
    module.write_text(
        "from typing import Any\nfrom thimble.consumer import App\napp = App('x')\n"
        "@app.handler(source='a')\ndef f(x: dict[str, Any]) -> None: ...\n"
    )
    result = runner.invoke(cli, ["describe", f"{module}:app"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "dict[str, Any]" in result.output  # read as markup, it was "dict"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["produce", "bad topic!"], "topic: 'bad topic!' is not a Kafka topic name"),
        (["tail", "a/b"], "topic: 'a/b' is not a Kafka topic name"),
        (["dlq", "replay", ".."], "the dead-letter topic: '..' is not a Kafka topic name"),
        (["dlq", "replay", "x.dlq", "--to", "a b"], "--to: 'a b' is not a Kafka topic name"),
    ],
)
def test_a_topic_kafka_would_refuse_is_one_line_before_any_broker(args: list[str], needle: str) -> None:
    result = runner.invoke(cli, [*args, "--bootstrap-servers", "127.0.0.1:1"], input="{}\n")
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert "Traceback" not in result.output


def test_a_negative_tail_timeout_is_refused() -> None:
    result = runner.invoke(cli, ["tail", "t", "--timeout", "-5", "--bootstrap-servers", "127.0.0.1:1"])
    assert result.exit_code == 2
    assert "--timeout" in result.output


def test_invalid_config_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("consumer:\n  max_retries: -1\n")
    result = runner.invoke(cli, ["describe", CLI_APP, "--config", str(config)])
    assert result.exit_code == 2
    assert "max_retries" in result.output


def test_an_empty_group_id_is_refused_not_taken_for_the_default() -> None:
    from thimble.common import ConfigError, load_settings
    from thimble.consumer import ConsumerSettings

    with pytest.raises(ConfigError, match=r"consumer\.group_id"):
        load_settings(ConsumerSettings, overrides={"consumer": {"group_id": ""}})


@pytest.mark.parametrize(
    ("overrides", "kind", "extra", "expected"),
    [
        (
            {"consumer": {"producer_extra": {"message.timeout.ms": "abc"}}},
            "producer",
            "producer_extra",
            "consumer.producer_extra['message.timeout.ms']: Invalid value",
        ),
        (
            {"consumer": {"producer_extra": {"linger.ms": "soon"}}},
            "producer",
            "producer_extra",
            "consumer.producer_extra['linger.ms']: Invalid value",
        ),
        (
            {"consumer": {"consumer_extra": {"no.such.property": 1}}},
            "consumer",
            "consumer_extra",
            "consumer.consumer_extra['no.such.property']: No such configuration property",
        ),
        (
            {"kafka": {"security_protocol": "SSL", "ssl_ca_location": "/no/such/ca.pem"}},
            "admin",
            None,
            "kafka.ssl_ca_location: ssl.ca.location failed",
        ),
    ],
)
def test_a_kafka_setting_librdkafka_refuses_is_one_line_naming_it(
    overrides: dict[str, Any], kind: str, extra: Any, expected: str
) -> None:
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

    from thimble.common import load_settings
    from thimble.consumer import ConsumerError, ConsumerSettings
    from thimble.consumer._kafka import consumer_config, kafka_client, producer_config

    settings = load_settings(ConsumerSettings, overrides=overrides)
    conf = {
        "producer": lambda: producer_config(settings, "t"),
        "consumer": lambda: consumer_config(settings, "g", "t"),
        "admin": lambda: settings.kafka.client_config(),
    }[kind]()
    client = {"producer": Producer, "consumer": Consumer, "admin": AdminClient}[kind]
    with pytest.raises(ConsumerError) as refused:
        kafka_client(client, conf, settings, extra)
    assert str(refused.value).startswith(expected)
    assert "\n" not in str(refused.value)


def test_the_cli_reports_a_refused_kafka_setting_without_a_traceback() -> None:
    env = {"THIMBLE_KAFKA__SECURITY_PROTOCOL": "SSL", "THIMBLE_KAFKA__SSL_CA_LOCATION": "/no/such/ca.pem"}
    result = runner.invoke(cli, ["produce", "events"], input='{"a": 1}\n', env=env)
    assert result.exit_code == 2, result.output
    assert "error: kafka.ssl_ca_location: ssl.ca.location failed" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("section", "name", "value", "why"),
    [
        (
            "consumer_extra",
            "enable.auto.offset.store",
            True,
            "an offset is stored only once its message is processed",
        ),
        ("consumer_extra", "group.id", "other", "set consumer.group_id (--group-id) instead"),
        ("producer_extra", "enable.idempotence", False, "outputs are written by an idempotent producer"),
        ("producer_extra", "acks", 1, "outputs are acknowledged by every in-sync replica"),
        (
            "producer_extra",
            "max.in.flight.requests.per.connection",
            5,
            "a leader change cannot reorder two requests and drop the first",
        ),
        (
            "producer_extra",
            "max.in.flight",
            5,
            "a leader change cannot reorder two requests and drop the first",
        ),
        ("producer_extra", "linger.ms", [5], None),
        ("consumer_extra", "fetch.max.bytes", {"a": 1}, None),
    ],
)
def test_raw_librdkafka_settings_that_would_void_a_guarantee_are_refused_in_one_line(
    section: str, name: str, value: Any, why: str | None
) -> None:
    from thimble.common import ConfigError, load_settings
    from thimble.consumer import ConsumerSettings

    with pytest.raises(ConfigError) as refused:
        load_settings(ConsumerSettings, overrides={"consumer": {section: {name: value}}})
    [problem] = refused.value.problems
    expected = (
        f"is set by thimble-consumer ({why}); remove it" if why else "must be a string, a number or a bool"
    )
    assert f"consumer.{section}: {name!r} {expected}" in problem


@pytest.mark.parametrize("transactional_id", [None, "orders-0"])
def test_every_output_producer_has_one_request_in_flight_per_broker(transactional_id: str | None) -> None:
    """Two requests in flight to a partition's new leader can be handled out of order; a broker that
    holds no state for the producer there then keeps the second, drops the first, and the client
    reports both delivered."""
    from thimble.common import load_settings
    from thimble.consumer import ConsumerSettings
    from thimble.consumer._kafka import producer_config

    conf = producer_config(load_settings(ConsumerSettings), "c", transactional_id)
    assert conf["max.in.flight.requests.per.connection"] == 1
    assert conf["enable.idempotence"] is True


@pytest.mark.parametrize(
    ("value", "kind"),
    [(None, "null"), (True, "a bool"), ({"a": 1}, "an object"), ([1], "an array"), (b"1", "a bytes")],
)
def test_produce_and_the_config_name_a_values_kind_alike(value: Any, kind: str) -> None:
    from datetime import date

    from thimble.common import ConfigError, load_settings
    from thimble.consumer import ConsumerSettings
    from thimble.consumer.cli import _field_key
    from thimble.consumer.errors import ConsumerError

    with pytest.raises(ConsumerError) as key:
        _field_key(value, "id", 1)
    assert str(key.value) == f"line 1: key field 'id' is {kind}; a key is a string or a number"
    refused_settings = [(date(2026, 1, 1), "a date")]  # YAML reads a date as one
    if not isinstance(value, bool | None):  # a librdkafka setting may be a bool; None leaves it unset
        refused_settings.append((value, kind))
    for setting, named in refused_settings:
        with pytest.raises(ConfigError) as refused:
            load_settings(ConsumerSettings, overrides={"consumer": {"consumer_extra": {"x": setting}}})
        [problem] = refused.value.problems
        assert f"'x' must be a string, a number or a bool, not {named}" in problem
