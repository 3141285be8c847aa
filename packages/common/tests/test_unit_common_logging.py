import io
import json
import logging
from collections.abc import Iterator

import pytest

from thimble.common import bind_context, configure_logging, get_logger, load_settings

pytestmark = pytest.mark.unit


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    configure_logging("consumer", "1.2.3", format="json", stream=buffer)
    yield buffer
    logging.getLogger().handlers.clear()


def records(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_json_lines_carry_package_version_and_bound_context(stream: io.StringIO) -> None:
    log = get_logger("thimble.test")
    with bind_context(topic="client-events", partition=3, offset=42):
        log.info("processed %d", 7, extra={"handler": "featurize"})
    log.warning("outside")
    first, second = records(stream)
    assert first["message"] == "processed 7"
    assert first["level"] == "info"
    assert (first["package"], first["version"]) == ("consumer", "1.2.3")
    assert (first["topic"], first["partition"], first["offset"]) == ("client-events", 3, 42)
    assert first["handler"] == "featurize"
    assert "topic" not in second


def test_nested_context_restores_outer(stream: io.StringIO) -> None:
    log = get_logger("thimble.test")
    with bind_context(table="a"):
        with bind_context(model="churn"):
            log.info("inner")
        log.info("outer")
    inner, outer = records(stream)
    assert inner["table"] == "a"
    assert inner["model"] == "churn"
    assert "model" not in outer


def test_exceptions_are_one_json_line(stream: io.StringIO) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        get_logger("t").exception("failed")
    (entry,) = records(stream)
    assert "ValueError: boom" in str(entry["error"])


def test_secrets_never_reach_a_log_line(stream: io.StringIO, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THIMBLE_KAFKA__SASL_PASSWORD", "correct-horse-battery")
    monkeypatch.setenv("THIMBLE_ONLINE_STORE__PASSWORD", "redis-pass-123")
    settings = load_settings()
    log = get_logger("t")
    conf = settings.kafka.client_config()
    log.info("client config %s", conf)
    log.info("connecting", extra={"redis_password": "whatever-it-is", "url": "redis://:redis-pass-123@host"})
    log.info("dsn user=a password=plain-in-message")
    with bind_context(api_token="tok-abcdef"):
        log.info("bound")
    output = stream.getvalue()
    for secret in (
        "correct-horse-battery",
        "redis-pass-123",
        "whatever-it-is",
        "plain-in-message",
        "tok-abcdef",
    ):
        assert secret not in output
    assert output.count("***") >= 5


def test_console_format_is_readable() -> None:
    buffer = io.StringIO()
    configure_logging("etl", "0.1.0", format="console", stream=buffer)
    try:
        with bind_context(table="client_features"):
            get_logger("thimble.etl").info("written")
    finally:
        logging.getLogger().handlers.clear()
    line = buffer.getvalue().strip()
    assert "INFO" in line
    assert "thimble.etl: written" in line
    assert "table=client_features" in line
    assert not line.startswith("{")


def test_json_lines_escape_what_a_terminal_acts_on_and_read_back_the_same(stream: io.StringIO) -> None:
    outside = "a\x7f\x9b2J\u2028b\u202ec\u2066d\x1b[2J"
    get_logger("thimble.test").warning("dead-lettered: %s", outside, extra={"key": outside})
    line = stream.getvalue()
    assert not any(c in line for c in "\x7f\x9b\u2028\u202e\u2066\x1b")
    assert "\\u202e" in line
    (record,) = records(stream)
    assert record["message"] == f"dead-lettered: {outside}"
    assert record["key"] == outside


def test_console_lines_show_outside_text_escaped_so_it_cannot_forge_a_line() -> None:
    buffer = io.StringIO()
    configure_logging("consumer", "1.2.3", format="console", stream=buffer)
    try:
        log = get_logger("thimble.test")
        forged = "bad\n13:28:00 INFO  forged line\x1b]0;title\x07\r\u202e"
        log.warning("message dead-lettered", extra={"error": f"ValueError: {forged}"})
        try:
            raise ValueError(forged)
        except ValueError:
            log.exception("failed: %s", forged)
    finally:
        logging.getLogger().handlers.clear()
    lines = buffer.getvalue().splitlines()
    assert "error=ValueError: bad\\n13:28:00 INFO  forged line\\x1b]0;title\\x07\\r\\u202e" in lines[0]
    assert lines[1].endswith("failed: bad\\n13:28:00 INFO  forged line\\x1b]0;title\\x07\\r\\u202e")
    assert not any(line.startswith("13:28:00 INFO  forged") for line in lines)
    assert not any(c in buffer.getvalue() for c in "\x1b\x07\r\u202e")
    assert "  Traceback (most recent call last):" in lines  # a traceback keeps its own lines, indented
