"""Random feature histories, loaded by thimble-etl's journal, and random labels: every label gets what a
plain-Python reading of the history says the entity's features were at the label's time."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from pyspark.sql import SparkSession

from thimble.common.config import ThimbleSettings
from thimble.common.features import FeatureSet
from thimble.etl import write_dataframe
from thimble.modelops import training_set

pytestmark = [pytest.mark.integration, pytest.mark.slow]

T0 = datetime(2026, 3, 1, tzinfo=UTC)
KEYS = ["k0", "k1", "k2", "k3"]
Event = tuple[int, str | None, float]  # (hour, segment, score)
Label = tuple[str, int | None]  # (key, half-hours from T0)


class Features(BaseModel):
    key: str
    at: datetime
    segment: str | None = None
    score: float = 0.0


def hours(h: float) -> datetime:
    return T0 + timedelta(hours=h)


events = st.lists(
    st.tuples(st.integers(0, 8), st.sampled_from(["a", "b", None]), st.sampled_from([1.0, 2.0])),
    max_size=4,
    unique_by=lambda e: e[0],  # one event of a key per time: two would be a conflict, not a history
)
histories = st.fixed_dictionaries({k: events for k in KEYS})


def label_lists(history: dict[str, list[Event]]) -> st.SearchStrategy[list[Label]]:
    """Labels of known and unknown keys at random times, often exactly when a version of their key began."""

    def at(key: str) -> st.SearchStrategy[Label]:
        starts = [2 * h for h, _, _ in history.get(key, [])]
        times = st.one_of(st.none(), st.integers(-2, 20), *([st.sampled_from(starts)] * 2 if starts else []))
        return st.tuples(st.just(key), times)

    return st.lists(st.sampled_from([*KEYS, "unknown"]).flatmap(at), min_size=5, max_size=30)


def expected(history: dict[str, list[Event]], key: str, half_hours: int | None) -> tuple[Any, Any]:
    """The features of ``key`` at the label's time: its latest event at or before it, else none."""
    if half_hours is None:
        return (None, None)
    before = [e for e in history.get(key, []) if e[0] * 2 <= half_hours]
    if not before:
        return (None, None)
    _, segment, score = max(before)
    return (segment, score)


@pytest.mark.timeout(600)
@settings(
    max_examples=3,
    deadline=None,
    # A failing example is reported as generated: shrinking it would cost a journal load per step.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=histories, data=st.data())
def test_every_label_gets_the_features_the_history_had_at_its_time(
    spark: SparkSession, spark_settings: ThimbleSettings, history: dict[str, list[Event]], data: st.DataObject
) -> None:
    labels = data.draw(label_lists(history), label="labels")
    fs = FeatureSet(
        "props", Features, entity_key="key", event_time="at", table=f"props_{uuid.uuid4().hex[:8]}"
    )
    # One always-present key, so that every history is a table.
    rows = [("always", hours(0), "a", 1.0)]
    rows += [(key, hours(h), segment, score) for key, evs in history.items() for h, segment, score in evs]
    df = spark.createDataFrame(rows, "key string, at timestamp, segment string, score double")
    result = write_dataframe(df, fs.table, mode="journal", journal=fs.journal(), settings=spark_settings)
    assert result.status == "committed", result

    label_df = spark.createDataFrame(
        [(i, key, None if hh is None else hours(hh / 2)) for i, (key, hh) in enumerate(labels)],
        "id int, key string, label_at timestamp",
    )
    got = training_set(label_df, fs, at="label_at", settings=spark_settings).df.collect()

    assert len(got) == len(labels)
    assert {r["id"]: (r["segment"], r["score"]) for r in got} == {
        i: expected(history, key, hh) for i, (key, hh) in enumerate(labels)
    }
