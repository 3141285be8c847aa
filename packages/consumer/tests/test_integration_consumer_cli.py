"""The CLI against the real broker: produce, tail, lag, missing topics, dlq replay, unreachable broker."""

from __future__ import annotations

import logging
import threading
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from thimble.common.errors import ServiceUnavailableError
from thimble.consumer import App, PartitionLag, TopicMissingError, group_lag
from thimble.consumer._runner import Runner
from thimble.consumer.cli import app as cli
from thimble.testing import produce, wait_until

from .conftest import CLI_APP, cli_env, make_settings

pytestmark = pytest.mark.integration

runner = CliRunner()


class Event(BaseModel):
    id: int


def test_produce_tail_and_lag(kafka_topic, kafka_config, tmp_path: Path) -> None:
    src, dst = kafka_topic("src"), kafka_topic("dst")
    lines = tmp_path / "events.jsonl"
    lines.write_text("".join(orjson.dumps({"id": i}).decode() + "\n" for i in range(5)))
    b = ["--bootstrap-servers", kafka_config["bootstrap.servers"]]
    result = runner.invoke(cli, ["produce", src, "--file", str(lines), "--key-field", "id", *b])
    assert result.exit_code == 0, result.output
    assert "produced 5 record(s)" in result.output
    result = runner.invoke(cli, ["tail", src, "--from-beginning", "--limit", "5", *b])
    assert result.exit_code == 0, result.output
    tailed = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [t["value"]["id"] for t in tailed] == list(range(5))
    assert tailed[0]["key"] == "0"
    env = cli_env(src, dst)
    result = runner.invoke(cli, ["lag", CLI_APP, "--group-id", f"g-{src}", *b], env=env)
    assert result.exit_code == 0, result.output
    assert "total lag: 5" in result.output
    result = runner.invoke(cli, ["lag", CLI_APP, "--group-id", f"g-{src}", "--json", *b], env=env)
    assert result.exit_code == 0, result.output
    doc = orjson.loads(result.stdout)
    assert doc["group"] == f"g-{src}"
    assert doc["total_lag"] == 5
    assert sorted(p["partition"] for p in doc["partitions"]) == [0]
    assert doc["partitions"][0] == {"topic": src, "partition": 0, "committed": None, "end": 5, "lag": 5}


def test_tail_shows_every_header_and_byte_and_nothing_a_terminal_acts_on(kafka_topic, kafka_config) -> None:
    src = kafka_topic("src")
    hostile = "[bold]x[/bold]\x1b[2J\r\nfake\u202e"
    headers = [("h", b"1"), ("h", b"\xff\xfe"), ("h", None), ("h", b""), (hostile, hostile.encode())]
    produce(kafka_config, src, [(b"\xffk", b"\xfe raw")], headers=headers)
    b = ["--bootstrap-servers", kafka_config["bootstrap.servers"]]
    result = runner.invoke(cli, ["tail", src, "--from-beginning", "--limit", "1", *b])
    assert result.exit_code == 0, result.output
    [line] = result.stdout.splitlines()
    assert all(c.isprintable() for c in line), ascii(line)
    doc = orjson.loads(line)
    assert doc["headers"] == [
        {"name": "h", "value": "1"},
        {"name": "h", "value_base64": "//4="},
        {"name": "h", "value": None},
        {"name": "h", "value": ""},
        {"name": hostile, "value": hostile},
    ]
    assert (doc["key_base64"], doc["value_base64"]) == ("/2s=", "/iByYXc=")
    result = runner.invoke(cli, ["tail", f"{src}-missing", "--timeout", "1", *b])
    assert result.exit_code == 2
    assert "does not exist" in result.output
    result = runner.invoke(cli, ["tail", f"{src}-{hostile}", "--timeout", "1", *b])
    assert result.exit_code == 2
    assert "is not a Kafka topic name" in result.output
    assert all(c.isprintable() for c in result.output.rstrip("\n")), ascii(result.output)
    assert "[bold]x[/bold]" in result.output  # shown, not taken for markup


def test_group_lag_follows_the_commits(kafka_topic, kafka_config, start_app) -> None:
    src, dst = kafka_topic("src"), kafka_topic("dst")
    settings = make_settings(kafka_config, f"g-{src}")
    app = App("lag-test")

    @app.handler(source=src, sink=dst)
    def handle(event: Event) -> Event:
        return event

    running = start_app(app, settings)
    produce(kafka_config, src, [(i, {"id": i}) for i in range(40)])
    assert sum(p.high for p in group_lag(settings, f"g-{src}", [src])) == 40
    wait_until(
        lambda: sum(p.lag for p in group_lag(settings, f"g-{src}", [src])) == 0,
        30,
        what="the group to commit all 40 messages",
    )
    lags = group_lag(settings, f"g-{src}", [src])
    assert [(p.topic, p.partition) for p in lags] == [(src, i) for i in range(len(lags))]
    assert all(isinstance(p, PartitionLag) and p.committed == p.high for p in lags)
    assert running.stop() == 0
    with pytest.raises(TopicMissingError, match="does not exist"):
        group_lag(settings, f"g-{src}", [f"{src}-missing"])
    unreachable = make_settings({"bootstrap.servers": "127.0.0.1:1"}, "g-nowhere")
    with pytest.raises(ServiceUnavailableError, match="cannot read the lag"):
        group_lag(unreachable, "g-nowhere", [src], timeout_s=1)


def test_bad_input_and_missing_topics(kafka_topic, kafka_config, tmp_path: Path) -> None:
    src = kafka_topic("src")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\n{oops\n')
    b = ["--bootstrap-servers", kafka_config["bootstrap.servers"]]
    result = runner.invoke(cli, ["produce", src, "--file", str(bad), *b])
    assert result.exit_code == 2
    assert "line 2: not valid JSON" in result.output
    env = cli_env(f"{src}-missing", f"{src}-out")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        result = runner.invoke(cli, ["run", CLI_APP, *b], env=env)
    finally:
        root.handlers[:] = handlers  # `run` configured logging onto the runner's captured stderr
        root.setLevel(level)
    assert result.exit_code == 2, result.output
    assert f"'{src}-missing'" in result.output
    assert "--create-topics" in result.output


def test_dlq_replay_refeeds_the_original_topic(kafka_topic, kafka_config, reader, start_app) -> None:
    src = kafka_topic("src")
    app = App("replay")
    fixed = threading.Event()

    @app.handler(source=src)
    def strict(event: Event) -> None:
        if not fixed.is_set():
            raise ValueError("not yet")

    produce(kafka_config, src, [(1, {"id": 1}), (2, {"id": 2})], headers=[("origin", b"test")])
    running = start_app(app, make_settings(kafka_config, src))
    reader(f"{src}.dlq").wait_for(2)
    running.stop()
    b = ["--bootstrap-servers", kafka_config["bootstrap.servers"]]
    result = runner.invoke(cli, ["dlq", "replay", f"{src}.dlq", "--dry-run", *b])
    assert "would replay 2 dead letter(s)" in result.output, result.output
    result = runner.invoke(cli, ["dlq", "replay", f"{src}.dlq", *b])
    assert result.exit_code == 0, result.output
    assert f"replayed 2 dead letter(s) ({src}: 2)" in result.output
    source = reader(src).wait_for(4)
    replayed = source[2:]
    headers = dict(replayed[0].headers())
    assert headers["origin"] == b"test"
    assert headers["thimble.replayed.from"].startswith(f"{src}.dlq/".encode())
    assert not any(k.startswith("thimble.error") for k in headers)
    result = runner.invoke(cli, ["dlq", "replay", f"{src}.dlq", *b])
    assert "replayed 0 dead letter(s)" in result.output  # progress was committed


def test_unreachable_broker_waits_not_ready_without_crashing() -> None:
    app = App("unreachable")

    @app.handler(source="anything")
    def h(event: Event) -> None: ...

    settings = make_settings({"bootstrap.servers": "127.0.0.1:1"}, "unreachable")
    consumer = Runner(app, settings)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(consumer.run()), daemon=True)
    thread.start()
    port = wait_until(lambda: _metrics_port(consumer), 10, what="metrics server")

    def status(path: str) -> int:
        try:
            return int(urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2).status)
        except urllib.error.HTTPError as exc:
            return exc.code

    assert status("/healthz") == 200
    assert status("/readyz") == 503
    thread.join(2.5)
    assert thread.is_alive()
    assert not result
    consumer.request_stop()
    thread.join(10)
    assert result == [0]


def _metrics_port(runner_: Runner) -> int | None:
    server = getattr(runner_, "metrics_server", None)
    return None if server is None else int(server.port)
