"""The Kafka source against the real broker: JSON parsed with the declared schema, resuming from its offsets."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from pyspark.sql import SparkSession

from thimble.common.config import ThimbleSettings
from thimble.etl import history, run_table
from thimble.testing import produce

from .conftest import config

pytestmark = pytest.mark.integration


def test_kafka_source_resumes_from_committed_offsets(
    spark: SparkSession,
    spark_settings: ThimbleSettings,
    kafka_config: dict[str, Any],
    kafka_topic: Callable[..., str],
    table_name: str,
) -> None:
    topic = kafka_topic("etl", partitions=2)
    values: list[Any] = [{"client_id": f"c{i}", "amount": i} for i in range(4)]
    # not JSON, though Spark's lenient defaults would accept the last two
    values += [b"{not json", b"{'client_id': 'c7', 'amount': 7}", b'{"client_id": "c8", "amount": NaN}']
    produce(kafka_config, topic, [(None, value) for value in values], partitions=2)
    cfg = config(
        table=table_name,
        source={"type": "kafka", "topic": topic},
        schema_={"columns": {"client_id": "string", "amount": "double"}},
        write={"mode": "append"},
    )
    first = run_table(cfg, spark=spark, settings=spark_settings)
    assert (first.rows_read, first.rows_quarantined, first.inserted) == (7, 3, 4)
    db = spark_settings.warehouse.database
    bad = spark.table(f"{db}.{table_name}_quarantine").collect()
    assert all(r.failed_rules[0].startswith("source: not a JSON object") for r in bad)
    assert sorted(json.loads(r.record)["_kafka_offset"] for r in bad) == [2, 2, 3]

    again = run_table(cfg, spark=spark, settings=spark_settings)
    assert again.status == "no_new_data"

    produce(kafka_config, topic, [(None, {"client_id": "c9", "amount": 9})], partitions=2)
    third = run_table(cfg, spark=spark, settings=spark_settings)
    assert (third.rows_read, third.inserted) == (1, 1)
    rows = spark.table(f"{db}.{table_name}").collect()
    assert sorted(r.client_id for r in rows) == ["c0", "c1", "c2", "c3", "c9"]
    assert {r._kafka_topic for r in rows} == {topic}
    offsets = history(table_name, spark=spark, settings=spark_settings)
    assert offsets[0].run_id == third.run_id
