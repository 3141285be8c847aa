from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from thimble.modelops import Registry
from thimble.testing import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_stream_scores_a_topic_with_the_consumer(
    saved_churn: Registry, kafka_config: dict[str, Any], kafka_topic: Callable[..., str]
) -> None:
    source, sink = kafka_topic("client-features"), kafka_topic("churn-scores")
    admin = AdminClient(kafka_config)
    admin.create_topics([NewTopic(f"{source}.dlq", 1, 1)])[f"{source}.dlq"].result(30)
    rows = [{"client_id": i, "orders_7d": i % 20, "spend_7d": 5.0 * i} for i in range(30)]
    cli = Path(sys.executable).parent / "thimble-modelops"
    proc = subprocess.Popen(
        [
            str(cli),
            "stream",
            "churn@prod",
            "--source",
            source,
            "--sink",
            sink,
            "--registry",
            saved_churn.url,
            "--group",
            f"g-{uuid.uuid4().hex[:8]}",
        ],
        env=os.environ | {"THIMBLE_METRICS__PORT": "0"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    producer = Producer(kafka_config)
    for row in rows:
        producer.produce(source, orjson.dumps(row), key=str(row["client_id"]).encode())
    producer.flush(30)
    reader = Consumer(kafka_config | {"group.id": f"r-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"})
    reader.subscribe([sink])
    got: dict[bytes, Any] = {}

    def poll() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"stream exited: {proc.stdout.read().decode() if proc.stdout else ''}")
        msg = reader.poll(0.5)
        if msg is not None and msg.error() is None:
            got[msg.key()] = orjson.loads(msg.value())
        return len(got) == len(rows)

    try:
        wait_until(poll, 90, what="30 predictions on the sink topic")
    finally:
        reader.close()
        admin.delete_topics([f"{source}.dlq"])
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(60)
    expected = saved_churn.load("churn@1").predict(rows)
    first = got[b"0"]
    assert {k: first[k] for k in ("p_churn", "high_risk")} == expected[0]
    assert (first["_model"], first["_model_version"], first["client_id"]) == ("churn", 1, 0)
    assert [got[str(r["client_id"]).encode()]["p_churn"] for r in rows] == [e["p_churn"] for e in expected]
