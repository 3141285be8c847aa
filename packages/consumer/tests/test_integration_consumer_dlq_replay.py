"""`dlq replay` against the real broker: transactional dead-letter topics, resuming, filters, tombstones,
and dead letters that cannot be replayed."""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from pydantic import BaseModel
from typer.testing import CliRunner

from thimble.consumer import App
from thimble.consumer._dead_letters import (
    ERROR_CLASS,
    HEADERS_DROPPED,
    ORIGINAL_TOPIC,
    REPLAYED_FROM,
    VALUE_CUT,
)
from thimble.consumer._dlq_replay import ReplayReport, replay
from thimble.consumer.cli import app as cli
from thimble.testing import produce, wait_until

from .conftest import make_settings

pytestmark = pytest.mark.integration


class Event(BaseModel):
    id: int
    poison: bool = False


def _replay_in_thread(timeout: float, *args: Any, **kwargs: Any) -> ReplayReport:
    """``replay`` that must end within ``timeout`` seconds."""
    result: list[Any] = []

    def target() -> None:
        try:
            result.append(replay(*args, **kwargs))
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "the replay did not end"
    if isinstance(result[0], BaseException):
        raise result[0]
    report = result[0]
    assert isinstance(report, ReplayReport)
    return report


def test_replay_of_an_exactly_once_dead_letter_topic_ends_and_keeps_tombstones(
    kafka_topic, kafka_config, reader, start_app
) -> None:
    src, dst = kafka_topic("src", partitions=2), kafka_topic("dst")
    app = App("replay-eos")

    @app.handler(source=src, sink=dst)
    def strict(event: Event) -> Event:
        if event.poison:
            raise ValueError(f"poison {event.id}")
        return event

    settings = make_settings(kafka_config, src, exactly_once=True)
    records: list[tuple[Any, Any]] = [(i, {"id": i, "poison": i % 3 == 0}) for i in range(9)]
    produce(kafka_config, src, records)
    produce(kafka_config, src, [(b"99", None)])  # a tombstone cannot be decoded: dead-lettered
    running = start_app(app, settings)
    dlq = reader(f"{src}.dlq").wait_for(4)
    assert running.stop() == 0
    tombstones = [m for m in dlq if m.value() is None]
    assert [m.key() for m in tombstones] == [b"99"], "a tombstone is dead-lettered as a tombstone"

    report = _replay_in_thread(30, settings, f"{src}.dlq")
    assert (report.replayed, report.skipped) == (4, 0)
    source = reader(src).wait_for(14)
    replayed = [m for m in source if dict(m.headers() or []).get(REPLAYED_FROM)]
    assert len(replayed) == 4
    assert [m.value() for m in replayed if m.key() == b"99"] == [None], "replayed as a tombstone"
    again = _replay_in_thread(30, settings, f"{src}.dlq")
    assert (again.replayed, again.skipped) == (0, 0)  # progress was committed


def test_interrupted_replay_resumes_and_a_filter_leaves_what_it_skipped(
    kafka_topic, kafka_config, reader
) -> None:
    dlq, target = kafka_topic("dlq"), kafka_topic("target")
    classes = ["ValueError", "KeyError"] * 5
    for i, klass in enumerate(classes):
        produce(
            kafka_config,
            dlq,
            [(i, {"id": i})],
            headers=[(ORIGINAL_TOPIC, target.encode()), (ERROR_CLASS, klass.encode())],
        )
    settings = make_settings(kafka_config, dlq)

    # Interrupted after the third dead letter: those three are committed and not sent again.
    def interrupt(_topic: str, offset: int, _klass: str) -> None:
        if offset == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        replay(settings, dlq, error_class="Error", on_record=interrupt)
    out = reader(target)
    wait_until(lambda: len(out.poll()) >= 3, 30, what="the first three replayed")

    # A filtered replay: the KeyErrors it skips stay to be replayed.
    filtered = _replay_in_thread(30, settings, dlq, error_class="ValueError")
    assert (filtered.replayed, filtered.skipped) == (3, 4)  # offsets 4, 6, 8; skips 3, 5, 7, 9
    rest = _replay_in_thread(30, settings, dlq)
    # From the first skipped (offset 3) on: every KeyError, and the ValueErrors behind it again.
    assert (rest.replayed, rest.skipped) == (7, 0)
    wait_until(lambda: len(out.poll()) >= 3 + 3 + 7, 30, what="every replayed record")
    replayed_from = [dict(m.headers())[REPLAYED_FROM].decode().rsplit("/", 1)[1] for m in out.records]
    key_errors = {str(i) for i, k in enumerate(classes) if k == "KeyError"}
    assert key_errors <= set(replayed_from)
    assert sorted(replayed_from[:3]) == ["0", "1", "2"]
    assert len(out.poll()) == 13


def _dead_letters(kafka_config: dict[str, Any], dlq: str, targets: list[str]) -> None:
    """Dead letter ``i`` (for ``targets[i]``) on partition ``i % 2`` of ``dlq``, at offset ``i // 2``."""
    for i, target in enumerate(targets):
        headers = [(ORIGINAL_TOPIC, target.encode()), (ERROR_CLASS, b"ValueError")]
        produce(kafka_config, dlq, [(i, {"id": i})], headers=headers, partition=i % 2)


def _end(kafka_config: dict[str, Any], topic: str) -> int:
    """How many records ``topic`` (one partition) holds: every replayed record was acknowledged."""
    consumer = Consumer({**kafka_config, "group.id": f"end-{uuid.uuid4().hex}"})
    try:
        return int(consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False)[1])
    finally:
        consumer.close()


def _replayed_from(records: list[Any]) -> Counter[str]:
    """How often each dead letter (``partition/offset``) was replayed."""
    return Counter(dict(m.headers())[REPLAYED_FROM].decode().split("/", 1)[1] for m in records)


@pytest.fixture
def missing_topic(kafka_config: dict[str, Any]) -> Iterator[str]:
    """The name of a topic that does not exist yet (the broker does not create topics on use); deleted
    after the test if it was created."""
    name = f"late-{uuid.uuid4().hex[:10]}"
    yield name
    for future in AdminClient(kafka_config).delete_topics([name]).values():
        with contextlib.suppress(Exception):  # never created
            future.result(timeout=30)


def test_a_dead_letter_for_an_invalid_topic_stays_and_the_replay_moves_past_what_it_sent(
    kafka_topic, kafka_config, reader
) -> None:
    dlq, target = kafka_topic("dlq", partitions=2), kafka_topic("target")
    # Partition 0: offsets 0, 1, [2: an invalid topic], 3. Partition 1: offsets 0 to 3.
    _dead_letters(kafka_config, dlq, [target] * 4 + ["bad topic!"] + [target] * 3)
    settings = make_settings(kafka_config, dlq)
    sent_first = ["0/0", "0/1", "1/0", "1/1", "1/2", "1/3"]

    first = _replay_in_thread(60, settings, dlq)
    assert (first.replayed, first.skipped, first.failed) == (6, 0, 1)
    assert first.failures == [
        f"dead letter {dlq}/0/2 was not replayed to 'bad topic!': not a Kafka topic name "
        "(letters, digits, '.', '_' and '-', at most 249 characters)"
    ]
    out = reader(target)
    assert _replayed_from(out.wait_for(6)) == Counter(sent_first)  # not 0/3, behind the refused letter
    assert _end(kafka_config, target) == 6

    # Every later run offers the refused letter again, and sends nothing twice.
    again = _replay_in_thread(60, settings, dlq)
    assert (again.replayed, again.skipped, again.failed) == (0, 0, 1)
    result = CliRunner().invoke(cli, ["dlq", "replay", dlq, "-b", kafka_config["bootstrap.servers"]])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert [line for line in result.output.splitlines() if line.startswith("error:")] == [
        f"error: dead letter {dlq}/0/2 was not replayed to 'bad topic!': not a Kafka topic name (letters, "
        "digits, '.', '_' and '-', at most 249 characters); it stays, with the dead letters behind it in "
        "its partition, for a later replay"
    ]
    assert "replayed 0 dead letter(s) (nothing); skipped 0; not replayed 1" in result.output
    assert _end(kafka_config, target) == 6

    # Sent elsewhere (--to), exactly the letters left are replayed.
    rest = _replay_in_thread(60, settings, dlq, to=target)
    assert (rest.replayed, rest.failed) == (2, 0)
    assert _replayed_from(out.wait_for(8)) == Counter([*sent_first, "0/2", "0/3"])
    assert _end(kafka_config, target) == 8


def test_a_dead_letter_for_a_missing_topic_is_replayed_once_the_topic_exists(
    kafka_topic, kafka_config, reader, missing_topic
) -> None:
    dlq, target = kafka_topic("dlq", partitions=2), kafka_topic("target")
    # Partition 1: offsets 0, [1: a topic not created yet], 2. Partition 0: offsets 0 to 2.
    _dead_letters(kafka_config, dlq, [target] * 3 + [missing_topic] + [target] * 2)
    settings = make_settings(kafka_config, dlq)

    first = _replay_in_thread(60, settings, dlq)
    assert (first.replayed, first.failed) == (4, 1)
    assert first.failures == [
        f"dead letter {dlq}/1/1 was not replayed to {missing_topic!r}: no such topic (create it, then "
        "replay again)"
    ]
    assert _end(kafka_config, target) == 4

    admin = AdminClient(kafka_config)
    admin.create_topics([NewTopic(missing_topic, 1, 1)])[missing_topic].result(timeout=30)
    wait_until(
        lambda: admin.list_topics(missing_topic, timeout=2).topics[missing_topic].error is None,
        30,
        what=f"topic {missing_topic}",
    )
    rest = _replay_in_thread(60, settings, dlq)
    assert (rest.replayed, rest.failed) == (2, 0)
    assert rest.by_topic == {missing_topic: 1, target: 1}
    assert _replayed_from(reader(target).wait_for(5)) == Counter(["0/0", "0/1", "0/2", "1/0", "1/2"])
    assert _end(kafka_config, target) == 5
    assert _replayed_from(reader(missing_topic).wait_for(1)) == Counter(["1/1"])
    done = _replay_in_thread(60, settings, dlq)
    assert (done.replayed, done.skipped, done.failed) == (0, 0, 0)


def test_a_dead_letter_the_broker_refuses_holds_the_commit_before_it(
    kafka_topic, kafka_config, reader
) -> None:
    dlq, target = kafka_topic("dlq", partitions=2), kafka_topic("target")
    small = kafka_topic("small", config={"max.message.bytes": "2048"})
    # Partition 0: offsets 0, 1, [2: too large for its topic], 3. Partition 1: offsets 0 to 2.
    for i, topic in enumerate([target] * 4 + [small] + [target] * 2):
        value = os.urandom(8192) if topic == small else orjson.dumps({"id": i})
        headers = [(ORIGINAL_TOPIC, topic.encode()), (ERROR_CLASS, b"ValueError")]
        produce(kafka_config, dlq, [(i, value)], headers=headers, partition=i % 2)
    settings = make_settings(kafka_config, dlq)

    first = _replay_in_thread(60, settings, dlq)
    refused = f"dead letter {dlq}/0/2 was not replayed to {small!r}: Broker: Message size too large"
    assert (first.failures, first.by_topic) == ([refused], {target: first.replayed})
    again = _replay_in_thread(60, settings, dlq)
    assert (again.failures, again.by_topic) == ([refused], {target: again.replayed})
    sent = _replayed_from(reader(target).wait_for(first.replayed + again.replayed))
    # Sent once: the letters before the refused one, and the other partition's. The letter behind it,
    # sent before the broker answered, may be sent again (at-least-once).
    assert {k: sent[k] for k in ("0/0", "0/1", "1/0", "1/1", "1/2")} == dict.fromkeys(
        ("0/0", "0/1", "1/0", "1/1", "1/2"), 1
    )
    assert sent["0/3"] >= 1
    assert _end(kafka_config, small) == 0


def test_a_cut_dead_letter_is_passed_over_and_never_sent(kafka_topic, kafka_config, reader) -> None:
    dlq, target = kafka_topic("dlq"), kafka_topic("target")
    headers = [(ORIGINAL_TOPIC, target.encode()), (ERROR_CLASS, b"DecodeError")]
    produce(kafka_config, dlq, [(0, {"id": 0})], headers=headers)
    produce(kafka_config, dlq, [(1, b"{xxxx")], headers=[*headers, (VALUE_CUT, b"1040001")])
    produce(kafka_config, dlq, [(2, {"id": 2})], headers=headers)
    settings = make_settings(kafka_config, dlq)

    result = CliRunner().invoke(cli, ["dlq", "replay", dlq, "-b", kafka_config["bootstrap.servers"]])
    assert result.exit_code == 0, result.output
    assert "skipped 0; passed over 1 cut" in " ".join(result.output.split())
    assert _replayed_from(reader(target).wait_for(2)) == Counter(["0/0", "0/2"])
    again = _replay_in_thread(60, settings, dlq)  # committed past it: nothing left
    assert (again.replayed, again.cut, again.failed) == (0, 0, 0)
    assert _end(kafka_config, target) == 2


def test_a_replay_that_ends_commits_every_partition_to_its_end(kafka_topic, kafka_config) -> None:
    dlq, target = kafka_topic("dlq", partitions=3), kafka_topic("target")
    headers = [(ORIGINAL_TOPIC, target.encode()), (ERROR_CLASS, b"ValueError")]
    letters = [(i, {"id": i}) for i in range(30_000)]
    produce(kafka_config, dlq, letters, headers=headers, partitions=3)
    produce(kafka_config, dlq, [(0, b"{x")], headers=[*headers, (HEADERS_DROPPED, b"2")], partition=1)
    settings = make_settings(kafka_config, dlq)

    first = _replay_in_thread(120, settings, dlq)
    assert (first.replayed, first.cut, first.failed) == (30_000, 1, 0)
    again = _replay_in_thread(60, settings, dlq)  # a delivery report served early left nothing behind
    assert (again.replayed, again.cut) == (0, 0)
    assert _end(kafka_config, target) == 30_000
