from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import BaseModel
from pyspark.sql import SparkSession

from thimble.common.features import FeatureSet
from thimble.etl import feature_set_config, parse_table_config
from thimble.etl.cleanse import cleanse

pytestmark = pytest.mark.integration


class Counts(BaseModel):
    client_id: str
    event_ms: int
    orders: int = 0


def test_a_journal_orders_an_epoch_milliseconds_event_time_as_milliseconds(spark: SparkSession) -> None:
    config = parse_table_config(
        feature_set_config(FeatureSet("client-counts", Counts, entity_key="client_id", event_time="event_ms"))
    )
    moment = datetime(2026, 3, 1, 12, 30, 15, 250_000, tzinfo=UTC)
    landed = spark.createDataFrame(
        [("c00001", int(moment.timestamp() * 1000), 3)], "client_id string, event_ms bigint, orders bigint"
    )
    row = cleanse(landed, config.cleanse).first()
    assert row is not None
    assert row["event_ms"].replace(tzinfo=UTC) == moment  # the session's time zone is UTC
