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
from confluent_kafka.admin import AdminClient, NewTopic

from thimble.modelops import Registry
from thimble.testing import TopicReader, produce

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_stream_scores_a_topic_with_the_consumer(
    saved_churn: Registry,
    kafka_config: dict[str, Any],
    kafka_topic: Callable[..., str],
    reader: Callable[[str], TopicReader],
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
    produce(kafka_config, source, [(row["client_id"], row) for row in rows])
    scores = reader(sink)

    def all_scored() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"stream exited: {proc.stdout.read().decode() if proc.stdout else ''}")
        return len({msg.key() for msg in scores.records}) == len(rows)

    try:
        scores.wait_until(all_scored, 90, what="30 predictions on the sink topic")
        got = {msg.key(): orjson.loads(msg.value()) for msg in scores.records}
    finally:
        admin.delete_topics([f"{source}.dlq"])
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(60)
    expected = saved_churn.load("churn@1").predict(rows)
    first = got[b"0"]
    assert {k: first[k] for k in ("p_churn", "high_risk")} == expected[0]
    assert (first["_model"], first["_model_version"], first["client_id"]) == ("churn", 1, 0)
    assert [got[str(r["client_id"]).encode()]["p_churn"] for r in rows] == [e["p_churn"] for e in expected]
