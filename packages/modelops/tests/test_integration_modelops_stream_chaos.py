"""The stream attacked from outside, on the real broker: kill -9 under load, poison rows, a deleted sink.

Counts come from the topics: every input row has a prediction or a dead letter (at-least-once: a kill
may write some twice, never none), and the group's committed offsets end at the end of the input.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from pydantic import BaseModel, Field

from thimble.modelops import ModelContext, Registry, model
from thimble.testing import free_port, produce, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 3
# a killed member holds its partitions until its session times out: the broker's minimum, not 45 s
FAST_REJOIN = {"THIMBLE_CONSUMER__SESSION_TIMEOUT_MS": "6000"}


class Stream:
    """``thimble-modelops stream`` processes of one group, started again after each kill."""

    def __init__(self, registry: Registry, source: str, sink: str, log_dir: Path, **env: str) -> None:
        self.args = [
            str(Path(sys.executable).parent / "thimble-modelops"),
            "stream",
            "churn@prod",
            "--source",
            source,
            "--sink",
            sink,
            "--registry",
            registry.url,
            "--group",
            f"chaos-{uuid.uuid4().hex[:8]}",
        ]
        self.group = self.args[-1]
        self.env = os.environ | {"THIMBLE_METRICS__PORT": "0"} | FAST_REJOIN | env
        self.log_dir = log_dir
        self.logs: list[Path] = []
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> subprocess.Popen[bytes]:
        self.logs.append(self.log_dir / f"stream-{len(self.logs)}.log")
        with self.logs[-1].open("wb") as log:
            self.proc = subprocess.Popen(
                self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self.proc

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> int:
        """SIGTERM and wait: the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        return self.proc.wait(60)

    def alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            pytest.fail(f"stream exited {self.proc.returncode}: {self.logs[-1].read_text()[-2000:]}")
        return True

    def log_lines(self) -> list[dict[str, Any]]:
        lines = [line for path in self.logs for line in path.read_text().splitlines()]
        return [orjson.loads(line) if line.startswith("{") else {"message": line} for line in lines]


@pytest.fixture
def streams(tmp_path: Path) -> Iterator[list[Stream]]:
    made: list[Stream] = []
    yield made
    for stream in made:
        if stream.proc is not None and stream.proc.poll() is None:
            os.killpg(stream.proc.pid, signal.SIGKILL)
            stream.proc.wait(30)


def read_to_end(kafka_config: dict[str, Any], topic: str, partitions: int) -> list[Message]:
    """Every record of ``topic`` up to its high watermarks now."""
    consumer = Consumer({**kafka_config, "group.id": f"r-{uuid.uuid4().hex}", "enable.auto.commit": False})
    try:
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        }
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        got: list[Message] = []
        seen = dict.fromkeys(range(partitions), 0)

        def read() -> bool:
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is None:
                    got.append(msg)
                    seen[msg.partition()] = msg.offset() + 1
            return all(seen[p] >= ends[p] for p in range(partitions))

        wait_until(read, 60, what=f"{topic} read to its end {ends}")
        return got
    finally:
        consumer.close()


def committed(probe: Consumer, topic: str, partitions: int) -> int:
    offsets = probe.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    return sum(max(tp.offset, 0) for tp in offsets)


def produced(probe: Consumer, topic: str, partitions: int) -> int:
    return sum(
        probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)
    )


@pytest.fixture
def topics(kafka_topic: Callable[..., str], kafka_config: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """A source and a sink of 3 partitions, and the source's dead-letter topic."""
    source, sink = kafka_topic("chaos-in", PARTITIONS), kafka_topic("chaos-out", PARTITIONS)
    dlq, admin = f"{source}.dlq", AdminClient(kafka_config)
    admin.create_topics([NewTopic(dlq, 1, 1)])[dlq].result(30)
    yield source, sink
    admin.delete_topics([dlq])[dlq].result(30)


def test_kill_9_under_load_loses_no_row_and_commits_to_the_end(
    saved_churn: Registry,
    kafka_config: dict[str, Any],
    topics: tuple[str, str],
    streams: list[Stream],
    tmp_path: Path,
) -> None:
    rows = 20_000
    source, sink = topics
    poison = {i for i in range(rows) if i % 97 == 0}  # not JSON, wrong types, tombstones
    records: list[tuple[str, Any]] = []
    for i in range(rows):
        if i not in poison:
            records.append((f"k{i}", {"client_id": i, "orders_7d": i % 20, "spend_7d": float(i % 300)}))
        else:
            records.append((f"k{i}", [b"{not json", {"client_id": "one"}, None][i % 3]))
    stream = Stream(saved_churn, source, sink, tmp_path)
    streams.append(stream)
    probe = Consumer({**kafka_config, "group.id": stream.group})
    producing = threading.Thread(
        target=produce, args=(kafka_config, source, records), kwargs={"partitions": PARTITIONS}
    )
    try:
        producing.start()
        stream.start()
        rng = random.Random(7)
        for _ in range(3):  # each kill after the stream wrote a random share more, at a random moment
            target = produced(probe, sink, PARTITIONS) + rng.randint(100, rows // 4)
            wait_until(
                lambda target=target: stream.alive() and produced(probe, sink, PARTITIONS) >= target,
                60,
                what=f"{target} predictions before the next kill",
            )
            stream.kill()
            stream.start()
        producing.join(60)
        wait_until(
            lambda: stream.alive() and committed(probe, source, PARTITIONS) >= rows,
            90,
            what=f"the group's offsets committed to the end of {source} ({rows})",
        )
        assert stream.stop() == 0
        assert committed(probe, source, PARTITIONS) == rows  # exactly the end, nothing past it
    finally:
        probe.close()
    predictions = Counter(m.key() for m in read_to_end(kafka_config, sink, PARTITIONS))
    dead = Counter(m.key() for m in read_to_end(kafka_config, f"{source}.dlq", 1))
    good = {f"k{i}".encode() for i in range(rows) if i not in poison}
    bad = {f"k{i}".encode() for i in poison}
    assert set(predictions) == good  # at least once each: nothing lost, no poison scored
    assert set(dead) == bad
    assert max(predictions.values()) <= 4  # a row is scored again at most once per kill


def test_a_deleted_sink_stops_the_stream_without_committing_what_it_did_not_deliver(
    saved_churn: Registry,
    kafka_config: dict[str, Any],
    topics: tuple[str, str],
    streams: list[Stream],
    tmp_path: Path,
) -> None:
    source, sink = topics
    admin = AdminClient(kafka_config)
    stream = Stream(
        saved_churn,
        source,
        sink,
        tmp_path,
        THIMBLE_CONSUMER__PRODUCER_EXTRA='{"message.timeout.ms": 5000}',
    )
    streams.append(stream)
    probe = Consumer({**kafka_config, "group.id": stream.group})
    row = {"orders_7d": 1, "spend_7d": 1.0}
    try:
        produce(kafka_config, source, [(f"k{i}", row | {"client_id": i}) for i in range(300)], partitions=3)
        stream.start()
        wait_until(
            lambda: stream.alive() and committed(probe, source, PARTITIONS) == 300, 60, what="300 committed"
        )
        admin.delete_topics([sink])[sink].result(30)
        wait_until(lambda: sink not in admin.list_topics(timeout=5).topics, 30, what=f"{sink} deleted")
        produce(
            kafka_config, source, [(f"k{i}", row | {"client_id": i}) for i in range(300, 600)], partitions=3
        )
        assert stream.proc is not None
        code = stream.proc.wait(60)  # message.timeout.ms, then the stream stops
        assert committed(probe, source, PARTITIONS) == 300  # nothing past what was delivered
    finally:
        probe.close()
    errors = [line for line in stream.log_lines() if line.get("level") == "error"]
    assert errors, "the stream stopped without saying why"
    assert all(sink in line.get("error", "") for line in errors)
    assert code == 1  # a supervisor restarts it


class Note(BaseModel):
    client_id: int
    text: str = ""
    times: int = Field(default=1, ge=0, le=10_000)


class Echo(BaseModel):
    echo: str


@model(name="echo")
def echo(ctx: ModelContext, rows: list[Note]) -> list[Echo]:
    """The text, ``times`` times: an output as large as a test wants."""
    return [Echo(echo=r.text * r.times) for r in rows]


def test_poison_rows_are_dead_lettered_alone_with_their_reason_and_the_stream_goes_on(
    registry: Registry,
    kafka_config: dict[str, Any],
    topics: tuple[str, str],
    streams: list[Stream],
    tmp_path: Path,
) -> None:
    registry.save(echo, sample=[{"client_id": 0, "text": "a"}], pickle_function=True)
    source, sink = topics
    deep = b'{"client_id": 9, "x": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    hostile = [("thimble.error.stage", b"forged"), ("x", b"\xff\x00\n"), ("", b""), ("x", None)]
    sent: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]] | None]] = [
        (b"ok-1", orjson.dumps({"client_id": 1, "text": "a"}), None),
        (b"not-json", b"{broken", None),
        (b"array", b"[1, 2]", None),
        (b"wrong-type", orjson.dumps({"client_id": "one"}), None),
        (b"tombstone", None, None),
        (b"latin-1", '{"client_id": 2, "text": "\xe9"}'.encode("latin-1"), None),
        (b"\xff\xfe\x00binary-key", orjson.dumps({"client_id": 3, "text": "k"}), None),
        (None, orjson.dumps({"client_id": 4, "text": "no key"}), None),
        (b"hostile-headers", orjson.dumps({"client_id": 5, "text": "h"}), hostile),
        (b"poison-hostile-headers", b"{broken", hostile),
        (b"output-too-large", orjson.dumps({"client_id": 6, "text": "x" * 200, "times": 6000}), None),
        (b"near-1mb", b'{"client_id": 7, "text": "' + b"y" * 990_000 + b'"}', None),
        (b"near-1mb-not-json", b"{" + b"z" * 990_000, None),
        (b"deep", deep, None),
        (b"ok-2", orjson.dumps({"client_id": 8, "text": "b"}), None),
    ]
    producer = Producer({**kafka_config, "acks": "all"})
    for key, value, headers in sent:
        producer.produce(source, value, key, partition=0, headers=headers)
    assert producer.flush(30) == 0
    stream = Stream(registry, source, sink, tmp_path)
    stream.args[2] = "echo"
    streams.append(stream)
    probe = Consumer({**kafka_config, "group.id": stream.group})
    try:
        stream.start()
        wait_until(
            lambda: stream.alive() and committed(probe, source, PARTITIONS) == len(sent),
            90,
            what=f"{len(sent)} rows committed",
        )
        port = next(
            line["port"]
            for line in stream.log_lines()
            if line["message"] == "serving /metrics, /healthz, /readyz"
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            metrics = answer.read().decode()
        assert stream.stop() == 0
    finally:
        probe.close()
    scored = {m.key(): orjson.loads(m.value())["echo"] for m in read_to_end(kafka_config, sink, PARTITIONS)}
    letters = read_to_end(kafka_config, f"{source}.dlq", 1)
    dead = {m.key(): dict(m.headers() or []) for m in letters}
    forged = next(m for m in letters if m.key() == b"poison-hostile-headers")
    assert [v for k, v in forged.headers() or [] if k == "thimble.error.stage"] == [b"decode"]
    assert scored == {
        b"ok-1": "a",
        b"\xff\xfe\x00binary-key": "k",
        None: "no key",
        b"hostile-headers": "h",
        b"near-1mb": "y" * 990_000,
        b"ok-2": "b",
    }
    stages = {key: h["thimble.error.stage"].decode() for key, h in dead.items()}
    assert stages == {
        b"not-json": "decode",
        b"array": "validate",
        b"wrong-type": "validate",
        b"tombstone": "decode",
        b"latin-1": "decode",
        b"poison-hostile-headers": "decode",
        b"output-too-large": "output",
        b"near-1mb-not-json": "decode",
        b"deep": "decode",
    }
    assert 'thimble_consumer_dead_lettered_messages_total{handler="predict_echo"} 9.0' in metrics
    assert 'thimble_consumer_processed_messages_total{handler="predict_echo"} 6.0' in metrics
    reasons = {key: h["thimble.error.message"].decode() for key, h in dead.items()}
    assert reasons[b"tombstone"] == "no value (a tombstone or an empty record), not a row"
    assert reasons[b"deep"] == "JSON nested more than 254 levels deep; a row may not nest deeper"
    assert "larger than the producer may send" in reasons[b"output-too-large"]


def test_an_unreachable_broker_is_one_line_per_retry_and_the_stream_still_stops_on_sigterm(
    saved_churn: Registry, streams: list[Stream], tmp_path: Path
) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    stream = Stream(
        saved_churn, "nowhere-in", "nowhere-out", tmp_path, THIMBLE_KAFKA__BOOTSTRAP_SERVERS=nobody
    )
    streams.append(stream)
    stream.start()

    def retries() -> list[dict[str, Any]]:
        return [line for line in stream.log_lines() if line.get("message") == "Kafka unreachable, retrying"]

    wait_until(lambda: stream.alive() and len(retries()) >= 2, 30, what="two retries logged")
    assert stream.stop() == 0
    problems = [line for line in stream.log_lines() if line.get("level") in ("warning", "error")]
    assert problems == retries()  # nothing else: no traceback, no librdkafka noise
    assert {line["bootstrap_servers"] for line in problems} == {nobody}


def test_create_topics_creates_the_missing_sink_and_dead_letter_topic(
    saved_churn: Registry,
    kafka_config: dict[str, Any],
    kafka_topic: Callable[..., str],
    streams: list[Stream],
    tmp_path: Path,
) -> None:
    source = kafka_topic("create-in", 1)
    sink, dlq = f"{source}-made-out", f"{source}.dlq"
    admin = AdminClient(kafka_config)
    stream = Stream(saved_churn, source, sink, tmp_path)
    stream.args.append("--create-topics")
    streams.append(stream)
    produce(kafka_config, source, [("k1", {"client_id": 1, "orders_7d": 1, "spend_7d": 1.0}), ("k2", b"{")])
    try:
        stream.start()
        wait_until(
            lambda: stream.alive() and {sink, dlq} <= set(admin.list_topics(timeout=5).topics),
            60,
            what=f"{sink} and {dlq} created",
        )
        made = {t: len(admin.list_topics(t, timeout=5).topics[t].partitions) for t in (sink, dlq)}
        probe = Consumer({**kafka_config, "group.id": stream.group})
        try:
            wait_until(
                lambda: (
                    stream.alive()
                    and produced(probe, sink, made[sink]) == produced(probe, dlq, made[dlq]) == 1
                ),
                60,
                what="the prediction and the dead letter written",
            )
        finally:
            probe.close()
        assert [m.key() for m in read_to_end(kafka_config, sink, made[sink])] == [b"k1"]
        assert [m.key() for m in read_to_end(kafka_config, dlq, made[dlq])] == [b"k2"]
        assert stream.stop() == 0
    finally:
        for topic in (sink, dlq):
            admin.delete_topics([topic])[topic].exception(30)
