"""Point-in-time training sets over a journal that thimble-etl writes (real Spark and Delta).

The journal of ``client-features`` (times in hours from ``T0``), written by two loads:

* c1: gold/1.0 from 1, silver/2.0 from 3 (still open);
* c2: bronze/3.0 from 2, closed at 5 (the second load is a snapshot without it);
* c3: gold/4.0 from 1, silver/5.0 from 5 (the second load changes it).

Between the two loads a training set is built from a label table and kept, to be rebuilt afterwards.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel
from pyspark.sql import DataFrame, SparkSession

from thimble.common.config import ThimbleSettings
from thimble.common.features import FeatureSet
from thimble.etl import write_dataframe
from thimble.modelops import (
    ModelContext,
    ModelOpsError,
    Registry,
    SchemaMismatchError,
    TrainingSet,
    model,
    training_set,
    training_set_from_spec,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

T0 = datetime(2026, 3, 1, tzinfo=UTC)
FEATURE_COLUMNS = "client_id string, event_time timestamp, segment string, score double"
LABEL_COLUMNS = "id int, client_id string, label_time timestamp, churned boolean"


class ClientFeatures(BaseModel):
    client_id: str
    event_time: datetime
    segment: str | None = None
    score: float | None = None


def t(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def load(spark: SparkSession, settings: ThimbleSettings, fs: FeatureSet, rows: list[tuple[Any, ...]]) -> None:
    """One journal load of ``rows`` (a snapshot: keys it lacks are closed at its latest time)."""
    journal = {**fs.journal(), "deletes": "close", "max_close_share": 1.0}
    df = spark.createDataFrame(rows, FEATURE_COLUMNS)
    result = write_dataframe(df, fs.table, mode="journal", journal=journal, settings=settings)
    assert result.status == "committed", result


def labels(spark: SparkSession, rows: list[tuple[int, str | None, datetime | None]]) -> DataFrame:
    return spark.createDataFrame([(i, c, at, False) for i, c, at in rows], LABEL_COLUMNS)


def by_id(df: DataFrame, *columns: str) -> dict[int, tuple[Any, ...]]:
    return {r["id"]: tuple(r[c] for c in columns) for r in df.collect()}


@dataclass
class Journal:
    features: FeatureSet
    label_table: str
    built: TrainingSet  # between the two loads
    rows: list[Any]  # its rows then


@pytest.fixture(scope="module")
def journal(spark: SparkSession, spark_settings: ThimbleSettings) -> Journal:
    fs = FeatureSet(
        "client-features",
        ClientFeatures,
        entity_key="client_id",
        event_time="event_time",
        table=f"client_features_{uuid.uuid4().hex[:8]}",
    )
    first = [
        ("c1", t(1), "gold", 1.0),
        ("c1", t(3), "silver", 2.0),
        ("c2", t(2), "bronze", 3.0),
        ("c3", t(1), "gold", 4.0),
    ]
    load(spark, spark_settings, fs, first)
    label_table = f"{spark_settings.warehouse.database}.labels_{uuid.uuid4().hex[:8]}"
    labels(spark, [(1, "c1", t(2)), (2, "c1", t(8)), (3, "c3", t(8)), (4, "c2", t(8))]).write.format(
        "delta"
    ).saveAsTable(label_table)
    built = training_set(label_table, fs, at="label_time", settings=spark_settings)
    rows = built.df.collect()

    load(spark, spark_settings, fs, [("c1", t(5), "silver", 2.0), ("c3", t(5), "silver", 5.0)])
    labels(spark, [(5, "c3", t(8))]).write.format("delta").mode("append").saveAsTable(label_table)
    return Journal(fs, label_table, built, rows)


def test_each_label_gets_the_version_valid_at_its_time_never_a_later_one(
    spark: SparkSession, spark_settings: ThimbleSettings, journal: Journal
) -> None:
    rows = [
        (1, "c1", t(2)),  # c1 was gold then; silver came later
        (2, "c1", t(3)),  # a version is valid from its own time
        (3, "c1", t(0.5)),  # before c1's first version
        (4, "c2", t(4.9)),  # c2 before it was deleted
        (5, "c2", t(5)),  # the moment c2 was closed: no longer valid
        (6, "c2", t(6)),  # after the delete
        (7, "c9", t(4)),  # an entity the journal never saw
        (8, "c1", None),  # no label time
        (9, None, t(4)),  # no entity
        (10, "c3", t(4)),  # c3's older version
        (11, "c3", t(6.5)),  # c3's open version
    ]
    df, spec = training_set(labels(spark, rows), [journal.features], at="label_time", settings=spark_settings)

    assert df.columns == ["id", "client_id", "label_time", "churned", "segment", "score"]
    assert df.count() == len(rows)
    assert by_id(df, "segment", "score") == {
        1: ("gold", 1.0),
        2: ("silver", 2.0),
        3: (None, None),
        4: ("bronze", 3.0),
        5: (None, None),
        6: (None, None),
        7: (None, None),
        8: (None, None),
        9: (None, None),
        10: ("gold", 4.0),
        11: ("silver", 5.0),
    }
    assert spec.at == "label_time"
    assert spec.labels is None
    [pinned] = spec.feature_sets
    assert pinned.name == "client-features"
    assert pinned.table == journal.features.journal_table(spark_settings.warehouse.database)
    assert pinned.version == 1
    assert pinned.entity_key == "client_id"
    assert pinned.features == ("segment", "score")


class Segment(BaseModel):
    segment: str | None = None


class Flag(BaseModel):
    gold: bool


@model(name="gold-flag")
def flag(ctx: ModelContext, rows: list[Segment]) -> list[Flag]:
    return [Flag(gold=r.segment == "gold") for r in rows]


def test_the_spec_a_model_was_saved_with_rebuilds_the_same_rows_after_the_journal_changed(
    spark: SparkSession, spark_settings: ThimbleSettings, journal: Journal, registry: Registry
) -> None:
    built = journal.built
    assert by_id(built.df, "client_id", "segment", "score") == {
        1: ("c1", "gold", 1.0),
        2: ("c1", "silver", 2.0),
        3: ("c3", "gold", 4.0),
        4: ("c2", "bronze", 3.0),
    }
    assert built.spec.labels is not None
    assert (built.spec.labels.table, built.spec.labels.version) == (journal.label_table, 0)
    assert built.spec.tables == {journal.features.journal_table(spark_settings.warehouse.database): 0}
    saved = registry.save(flag, training_set=built, pickle_function=True)

    # Since it was built, c3 changed, c2 was deleted and a label row was added.
    fresh = training_set(journal.label_table, journal.features, at="label_time", settings=spark_settings)
    assert by_id(fresh.df, "segment") == {
        1: ("gold",),
        2: ("silver",),
        3: ("silver",),
        4: (None,),
        5: ("silver",),
    }

    loaded = registry.load(f"{saved.name}@{saved.version}")
    assert loaded.info is not None
    spec = loaded.info.context.training_set
    assert spec == built.spec
    record = spec.model_dump(mode="json")
    assert record["feature_sets"][0]["version"] == 0
    rebuilt = training_set_from_spec(record, spark=spark)
    assert rebuilt.spec == built.spec
    assert sorted(rebuilt.df.collect()) == sorted(journal.rows)


def test_a_journal_given_by_name_is_read_at_the_version_asked_for(
    spark: SparkSession, spark_settings: ThimbleSettings, journal: Journal
) -> None:
    table = journal.features.table
    rows = [(1, "c2", t(6)), (2, "c3", t(6))]
    df, spec = training_set(
        labels(spark, rows), table, at="label_time", key="client_id", versions={table: 0}, prefix=True,
        settings=spark_settings,
    )  # fmt: skip
    prefix = f"{table}__"
    assert df.columns[-3:] == [f"{prefix}event_time", f"{prefix}segment", f"{prefix}score"]
    # At version 0 (the first load) c2 was not deleted yet, and c3 had not changed.
    assert by_id(df, f"{prefix}segment") == {1: ("bronze",), 2: ("gold",)}
    database = spark_settings.warehouse.database
    assert spec.tables == {f"{database}.{table}": 0}
    assert str(spec) == f"labels a DataFrame as of 'label_time', features {database}.{table}@v0"


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"at": "when"}, SchemaMismatchError, "labels have no column 'when' (at=)"),
        ({"at": "id"}, SchemaMismatchError, "labels column 'id' (at=) is int; the label time must be"),
        ({"feature_sets": ["nope"]}, ModelOpsError, "give key= (the entity key)"),
        ({"feature_sets": ["nope"], "key": "client_id"}, ModelOpsError, "journal table 'nope': no table"),
        ({"feature_sets": ["a;b"], "key": "client_id"}, ModelOpsError, "'a;b' is not a warehouse table name"),
        (
            {"versions": {"client-features": 99}},
            ModelOpsError,
            "feature set 'client-features': cannot read it",
        ),
        ({"versions": {"other": 0}}, ModelOpsError, "versions names other: not one of"),
        ({"versions": {"client-features": -1}}, ModelOpsError, "version -1 is not a Delta version"),
        ({"label_version": 0}, ModelOpsError, "label_version is for labels given as a table name"),
        ({"labels": "no_such_labels"}, ModelOpsError, "labels: no table '"),
        (
            {"labels": "label_cols"},
            SchemaMismatchError,
            "feature column 'segment' of client-features is also a",
        ),
        ({"labels": "no_key"}, SchemaMismatchError, "labels have no column 'client_id', the entity key of"),
        ({"feature_sets": []}, ModelOpsError, "at least one feature set"),
    ],
)
def test_a_wrong_request_is_one_line_naming_what_is_wrong(
    spark: SparkSession,
    spark_settings: ThimbleSettings,
    journal: Journal,
    change: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    frames = {
        "label_cols": spark.createDataFrame(
            [("c1", t(1), "x")], "client_id string, label_time timestamp, segment string"
        ),
        "no_key": spark.createDataFrame([(t(1),)], "label_time timestamp"),
    }
    args: dict[str, Any] = {
        "labels": labels(spark, [(1, "c1", t(1))]),
        "feature_sets": [journal.features],
        "at": "label_time",
    }
    args.update(change)
    if isinstance(args["labels"], str) and args["labels"] in frames:
        args["labels"] = frames[args["labels"]]
    with pytest.raises(error) as caught:
        training_set(**args, settings=spark_settings)
    text = str(caught.value)
    assert message in text
    assert "\n" not in text
    assert "Traceback" not in text
    assert "at org." not in text
