"""``produce``: malformed lines with --raw (to try the dead letters), missing topics, and their creation."""

from __future__ import annotations

import uuid
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from typer.testing import CliRunner

from thimble.consumer._kafka import create_topics
from thimble.consumer.cli import app as cli

pytestmark = pytest.mark.integration

runner = CliRunner()

LINES = [b'{"id": 1}', b"{truncated", b"\xff\xfe not UTF-8", b'"a JSON string"']


def test_raw_sends_each_line_as_it_is(kafka_topic, kafka_config, reader, tmp_path: Path) -> None:
    src = kafka_topic("src")
    file = tmp_path / "lines.txt"
    file.write_bytes(b"\n".join(LINES) + b"\n\n")
    b = ["--bootstrap-servers", kafka_config["bootstrap.servers"]]
    refused = runner.invoke(cli, ["produce", src, "--file", str(file), *b])
    assert refused.exit_code == 2  # a usage error
    assert "line 2: not valid JSON" in refused.output
    assert "--raw" in refused.output
    result = runner.invoke(cli, ["produce", src, "--file", str(file), "--raw", *b])
    assert result.exit_code == 0, result.output
    assert "produced 4 record(s)" in result.output
    assert [m.value() for m in reader(src).wait_for(4)] == LINES


def test_a_missing_topic_is_created_only_when_asked(kafka_config, tmp_path: Path) -> None:
    topic = f"produce-missing-{uuid.uuid4().hex[:10]}"
    file = tmp_path / "lines.jsonl"
    file.write_text('{"id": 1}\n')
    b = ["--bootstrap-servers", kafka_config["bootstrap.servers"]]
    admin = AdminClient(kafka_config)
    try:
        refused = runner.invoke(cli, ["produce", topic, "--file", str(file), *b])
        assert refused.exit_code != 0
        assert f"topic(s) '{topic}' do not exist" in refused.output
        assert "--create-topics" in refused.output  # the hint names a flag this command has
        assert topic not in admin.list_topics(timeout=10).topics
        result = runner.invoke(cli, ["produce", topic, "--file", str(file), "--create-topics", *b])
        assert result.exit_code == 0, result.output
        assert "produced 1 record(s)" in result.output
        assert topic in admin.list_topics(timeout=10).topics
    finally:
        admin.delete_topics([topic])


def test_a_create_the_cluster_refuses_is_one_line_at_once(
    kafka_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = f"produce-refused-{uuid.uuid4().hex[:10]}"
    file = tmp_path / "lines.jsonl"
    file.write_text('{"id": 1}\n')
    admin = AdminClient(kafka_config)
    brokers = len(admin.list_topics(timeout=10).brokers)
    monkeypatch.setenv("THIMBLE_CONSUMER__TOPIC_REPLICATION", str(brokers + 1))
    b = ["--bootstrap-servers", kafka_config["bootstrap.servers"]]
    refused = runner.invoke(cli, ["produce", topic, "--file", str(file), "--create-topics", *b])
    assert refused.exit_code != 0
    lines = [line for line in refused.output.splitlines() if line.strip()]
    assert len(lines) == 1, refused.output
    assert f"cannot create topic '{topic}'" in lines[0]
    assert "Traceback" not in refused.output
    assert topic not in admin.list_topics(timeout=10).topics


class FirstCreateTimesOut(AdminClient):
    """The real cluster's admin client, whose first creation request the client gives up on at once."""

    requests = 0

    def create_topics(self, new_topics: list[NewTopic], **kwargs: Any) -> dict[str, Future[None]]:
        self.requests += 1
        if self.requests == 1:
            kwargs["request_timeout"] = 0.001
        return super().create_topics(new_topics, **kwargs)


def test_a_create_left_unanswered_is_sent_again(kafka_config) -> None:
    topic = f"create-unanswered-{uuid.uuid4().hex[:10]}"
    admin = FirstCreateTimesOut(kafka_config)
    waits: list[float] = []
    try:
        create_topics(admin, [topic], 1, 1, lambda delay: waits.append(delay) or False, 2.0, None)
        assert admin.requests == 2
        assert waits == [1.0]
        assert topic in admin.list_topics(timeout=10).topics
    finally:
        admin.delete_topics([topic])
