"""Reading a topic's JSON records up to its end offsets, on the real broker: what lineage and compare share."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import typer
from click.testing import CliRunner

from thimble.modelops._topic_records import read_json_records
from thimble.modelops.cli import app
from thimble.modelops.compare import read_prediction_log
from thimble.modelops.errors import ModelOpsError
from thimble.modelops.lineage import prediction_lineage
from thimble.testing import produce

pytestmark = pytest.mark.integration


def test_every_json_object_up_to_the_end_offsets_of_every_partition(
    kafka_config: dict[str, Any], kafka_topic: Callable[..., str]
) -> None:
    topic = kafka_topic("topic-records", partitions=2)
    produce(
        kafka_config,
        topic,
        [("r1", {"n": 0}), ("r2", {"n": 1}), ("r1", b"not json"), ("r1", [1, 2]), ("r1", {"n": 4})],
        partitions=2,
    )
    read = read_json_records(kafka_config, topic, group="test-topic-records", timeout_s=30)
    assert read.complete
    assert sorted(read.found) == [(0, 0, {"n": 0}), (0, 2, {"n": 4}), (1, 0, {"n": 1})]
    assert read.skipped == 2  # not JSON, and not an object: counted, never dropped silently
    keyed = read_json_records(kafka_config, topic, group="test-topic-records", timeout_s=30, key=b"r1")
    assert (keyed.complete, sorted(keyed.found)) == (True, [(0, 0, {"n": 0}), (0, 2, {"n": 4})])


def test_compare_counts_the_records_it_cannot_read_and_compares_the_rest(
    kafka_config: dict[str, Any], kafka_topic: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = kafka_topic("compare-poison")
    good = {"model": "churn", "version": 1, "alias": "churn@prod", "role": "primary", "latency_ms": 2.0}
    produce(
        kafka_config,
        topic,
        [
            ("a", good | {"outputs": [{"p": 0.25}]}),
            ("b", b"\x00 not json"),
            ("c", good | {"latency_ms": "slow", "outputs": [{"p": 0.5}]}),
            ("d", good | {"outputs": 7}),
            ("e", good | {"version": "1"}),
            ("f", good | {"outputs": [{"p": 0.75}]}),
        ],
    )
    log = read_prediction_log(kafka_config, topic)
    assert (len(log.records), log.skipped) == (5, {"not a JSON object": 1})  # returned with the records
    monkeypatch.setenv("THIMBLE_KAFKA__BOOTSTRAP_SERVERS", kafka_config["bootstrap.servers"])
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(typer.main.get_command(app), ["compare", "churn", "--topic", topic])
    assert result.exit_code == 0, result.output
    first, *table = result.output.splitlines()
    assert first == (
        f"skipped 4 records on {topic!r} that cannot be read: 1 'latency_ms' is not a number, "
        "1 'outputs' is not a list, 1 'version' is not an integer, 1 not a JSON object"
    )
    [row] = [line for line in table if "churn@prod" in line]
    assert "p=0.5" in row  # the mean of the two readable records


def test_a_transactional_topic_ending_in_markers_is_read_to_its_end(
    kafka_config: dict[str, Any], kafka_topic: Callable[..., str]
) -> None:
    """Commit and abort markers take offsets but are never delivered: the read still ends, complete."""
    from confluent_kafka import Producer

    topic = kafka_topic("topic-records", partitions=2)
    producer = Producer(kafka_config | {"transactional.id": f"topic-records-{uuid.uuid4().hex}"})
    producer.init_transactions(30)
    for n, commit in ((0, True), (1, False), (2, True)):
        producer.begin_transaction()
        producer.produce(topic, orjson.dumps({"n": n}), key=b"r1", partition=n % 2)
        if commit:
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)
    read = read_json_records(kafka_config, topic, group="test-topic-records", timeout_s=60)
    assert read.complete
    assert sorted(read.found) == [(0, 0, {"n": 0}), (0, 2, {"n": 2})]


def test_a_read_past_its_timeout_says_it_is_incomplete(
    kafka_config: dict[str, Any], kafka_topic: Callable[..., str]
) -> None:
    topic = kafka_topic("topic-records")
    produce(kafka_config, topic, [("r1", {"n": 0})])
    read = read_json_records(kafka_config, topic, group="test-topic-records", timeout_s=-1)
    assert (read.complete, read.found) == (False, [])


def test_an_empty_topic_is_read_at_once_and_a_missing_one_is_named(
    kafka_config: dict[str, Any], kafka_topic: Callable[..., str]
) -> None:
    empty = kafka_topic("topic-records")
    read = read_json_records(kafka_config, empty, group="test-topic-records", timeout_s=-1)
    assert (read.complete, read.found) == (True, [])
    missing = f"topic-records-missing-{uuid.uuid4().hex[:10]}"
    with pytest.raises(ModelOpsError, match=f"no topic '{missing}'"):
        read_json_records(
            kafka_config | {"allow.auto.create.topics": False},
            missing,
            group="test-topic-records",
            timeout_s=5,
        )


def test_lineage_of_a_request_reads_records_whose_fields_are_not_what_the_server_writes(
    kafka_config: dict[str, Any], kafka_topic: Callable[..., str]
) -> None:
    topic = kafka_topic("lineage-poison")
    base = {"request_id": "req-1", "model": "churn", "version": 1, "alias": "churn@prod", "role": "primary"}
    produce(
        kafka_config,
        topic,
        [
            ("req-1", base | {"time": 1e300, "inputs": 5, "outputs": "p"}),
            ("req-1", base | {"time": True, "inputs": [{"client_id": 1}, 2], "outputs": [{"p": 0.5}]}),
            ("req-1", base | {"time": 1_700_000_000_000, "model": "../x", "version": 10**12}),
        ],
    )
    found = prediction_lineage(kafka_config, topic, "req-1", timeout_s=30)
    assert [(f.time, f.features, f.outputs) for f in found] == [
        ("", [], []),
        ("", [{"client_id": 1}], [{"p": 0.5}]),
        ("2023-11-14T22:13:20.000+00:00", [], []),
    ]
