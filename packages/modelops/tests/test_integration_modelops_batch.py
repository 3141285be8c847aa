from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from modelops_testmodels import churn_sample, overflow, overflow_frame, risk, scorer
from pydantic import BaseModel

from thimble.common.config import ThimbleSettings
from thimble.etl import history
from thimble.modelops import ModelContext, ModelOpsError, Registry, SchemaMismatchError, Tracker, model
from thimble.modelops.batch import run_batch
from thimble.modelops.config import ModelOpsSettings, load_modelops_settings
from thimble.modelops.server import create_app
from thimble.testing import in_process_pass

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _settings(spark_settings: ThimbleSettings, registry: Registry, **extra: Any) -> ModelOpsSettings:
    return load_modelops_settings(
        overrides={
            "warehouse": spark_settings.warehouse.model_dump(),
            "modelops": {"registry": registry.url, **extra},
        }
    )


def _table(name: str) -> str:
    return f"{name}_{uuid.uuid4().hex[:8]}"


def test_batch_scores_a_table_into_a_versioned_delta_table_equal_to_serving(
    spark: Any,
    spark_settings: ThimbleSettings,
    saved_churn: Registry,
    redis_url: str,
    live: Callable[..., Any],
) -> None:
    settings = _settings(spark_settings, saved_churn)
    db = spark_settings.warehouse.database
    rows = churn_sample(400, seed=5)
    source, target = _table("client_features"), _table("churn_scores")
    spark.createDataFrame(
        [r | {"segment": "gold" if r["client_id"] % 2 else "silver"} for r in rows]
    ).write.format("delta").saveAsTable(f"{db}.{source}")

    result = run_batch(spark, "churn@prod", source, target, registry=saved_churn, settings=settings)
    assert result.rows == 400
    assert result.model_version == 1
    assert result.input_version == 0
    assert result.output_version == 0
    assert result.output_table == f"{db}.{target}"
    out = spark.table(f"{db}.{target}")
    assert out.columns == [
        "client_id",
        "segment",
        "p_churn",
        "high_risk",
        "_model",
        "_model_version",
        "_input_version",
        "_run_id",
    ]
    assert {
        (r["_model"], r["_model_version"], r["_input_version"])
        for r in out.select("_model", "_model_version", "_input_version").distinct().collect()
    } == {("churn", 1, 0)}
    commit = json.loads(spark.sql(f"DESCRIBE HISTORY {db}.{target}").select("userMetadata").first()[0])
    assert commit["thimble"]["run_id"] == result.run_id
    assert commit["thimble"]["metadata"] == {
        "model": "churn",
        "model_version": 1,
        "input_table": f"{db}.{source}",
        "input_version": 0,
        "where": None,
    }

    batch_scores = {r["client_id"]: (r["p_churn"], r["high_risk"]) for r in out.collect()}
    server = live(
        create_app(
            settings=settings.model_copy(
                update={"online_store": settings.online_store.model_copy(update={"url": redis_url})}
            ),
            refs=["churn@1"],
            registry=saved_churn,
        )
    )
    served = httpx.post(f"{server.url}/v1/models/churn@1/predict", json=rows, timeout=30).json()[
        "predictions"
    ]
    assert [(p["p_churn"], p["high_risk"]) for p in served] == [batch_scores[r["client_id"]] for r in rows]

    metrics = result.metrics
    assert metrics["rows"] == 400
    assert (
        0
        <= metrics["prediction.p_churn.min"]
        <= metrics["prediction.p_churn.mean"]
        <= metrics["prediction.p_churn.max"]
        <= 1
    )
    assert metrics["prediction.p_churn.nulls"] == 0
    assert metrics["psi.input.spend_7d"] < 0.25
    assert "psi.output.p_churn" in metrics
    assert metrics["quality.row_count"] == 400
    assert metrics["quality.completeness:p_churn"] == metrics["quality.completeness:high_risk"] == 1
    for stat in ("min", "max", "mean"):
        assert metrics[f"quality.{stat}:p_churn"] == pytest.approx(metrics[f"prediction.p_churn.{stat}"])
    (version,) = [v for v in history(target, spark=spark, settings=settings) if v.version == 0]
    assert version.metadata == commit["thimble"]["metadata"]
    (record,) = Tracker(f"{saved_churn.root}/_tracking.sqlite").records("churn", 1, "batch")
    assert record.info["output_version"] == 0
    assert record.metrics["rows"] == 400

    again = run_batch(
        spark, "churn@prod", source, target, registry=saved_churn, settings=settings, mode="append"
    )
    assert again.output_version == 1
    assert spark.table(f"{db}.{target}").count() == 800
    # Into an existing table the predictions are written as they are scored, measured by the write itself.
    assert again.metrics["quality.row_count"] == 400
    assert again.metrics["quality.mean:p_churn"] == pytest.approx(metrics["quality.mean:p_churn"])
    stored = (
        spark.table(f"{db}.thimble_quality")
        .filter(f"run_id = '{again.run_id}' AND name = 'row_count'")
        .select("value", "version", "committed")
        .collect()
    )
    assert [tuple(r) for r in stored] == [(400.0, 1, True)]

    # An overwrite may change the table's columns (here: without `segment`), as a new model version may.
    narrow_source = _table("client_features_narrow")
    spark.table(f"{db}.{source}").drop("segment").write.format("delta").saveAsTable(f"{db}.{narrow_source}")
    narrower = run_batch(spark, "churn@prod", narrow_source, target, registry=saved_churn, settings=settings)
    assert narrower.output_version == 2
    replaced = spark.table(f"{db}.{target}")
    assert (replaced.count(), "segment" in replaced.columns) == (400, False)
    versions = {v.version: v for v in history(target, spark=spark, settings=settings)}
    assert [(versions[n].inserted, versions[n].metadata["input_version"]) for n in (1, 2)] == [
        (400, 0),
        (400, 0),
    ]


@in_process_pass
def test_dataframe_models_batch_too(
    spark: Any, spark_settings: ThimbleSettings, registry: Registry, numbers_clf: object
) -> None:
    settings = _settings(spark_settings, registry)
    db = spark_settings.warehouse.database
    registry.save(scorer, artifacts={"clf": numbers_clf}, pickle_function=True)
    rows = [{"id": i, "f0": i / 10, "f1": -i / 7, "f2": 0.5, "f3": 1.0 - i / 3} for i in range(50)]
    source, target = _table("numbers"), _table("numbers_scored")
    spark.createDataFrame(rows).write.format("delta").saveAsTable(f"{db}.{source}")
    result = run_batch(spark, "scorer", source, target, keep=["id"], registry=registry, settings=settings)
    assert result.rows == 50
    got = {r["id"]: r["score"] for r in spark.table(f"{db}.{target}").collect()}
    expected = scorer.bind({"clf": numbers_clf}).predict(rows)
    # A vectorized model sees different batch sizes in Spark than in one call: BLAS may round the last bit.
    assert [got[i] for i in range(50)] == pytest.approx([e["score"] for e in expected], rel=1e-9, abs=1e-15)


@in_process_pass
def test_output_keeps_the_entity_key_of_a_model_without_features_and_keep_adds_to_it(
    spark: Any, spark_settings: ThimbleSettings, tmp_path: Any, numbers_clf: object
) -> None:
    # Signed: the Spark workers load the model from a registry that checks signatures too.
    registry = Registry(str(tmp_path / "models"), signing_key="s" * 32)
    settings = _settings(spark_settings, registry)
    db = spark_settings.warehouse.database
    registry.save(scorer, artifacts={"clf": numbers_clf}, pickle_function=True)
    rows = [{"id": i, "f0": i / 10, "f1": 0.0, "f2": 0.5, "f3": 1.0, "region": "north"} for i in range(20)]
    source, target = _table("numbers"), _table("numbers_scored")
    spark.createDataFrame(rows).write.format("delta").saveAsTable(f"{db}.{source}")
    run_batch(spark, "scorer", source, target, registry=registry, settings=settings)
    out = spark.table(f"{db}.{target}")
    assert out.columns[:3] == ["id", "region", "score"]
    assert sorted(r["id"] for r in out.collect()) == list(range(20))
    run_batch(spark, "scorer", source, target, keep=["f0"], registry=registry, settings=settings)
    assert spark.table(f"{db}.{target}").columns[:4] == ["id", "region", "f0", "score"]


def test_schema_mismatch_between_model_and_table_is_clear(
    spark: Any, spark_settings: ThimbleSettings, saved_churn: Registry
) -> None:
    settings = _settings(spark_settings, saved_churn)
    db = spark_settings.warehouse.database
    source = _table("bad_features")
    spark.sql(f"CREATE TABLE {db}.{source} (client_id BIGINT, orders_7d STRING) USING delta")
    with pytest.raises(SchemaMismatchError) as info:
        run_batch(spark, "churn@prod", source, _table("never"), registry=saved_churn, settings=settings)
    assert str(info.value) == (
        f"{db}.{source} does not match the input of churn@1: column 'orders_7d' is string; the model wants int; "
        "column 'spend_7d' is missing"
    )


def test_a_non_finite_output_fails_the_batch_naming_the_model_and_field_and_writes_nothing(
    spark: Any, spark_settings: ThimbleSettings, registry: Registry
) -> None:
    settings = _settings(spark_settings, registry)
    db = spark_settings.warehouse.database
    registry.save(overflow, pickle_function=True)
    registry.save(overflow_frame, pickle_function=True)
    rows = [r | {"spend_7d": abs(r["spend_7d"]) + 1.0} for r in churn_sample(20, seed=4)]
    source = _table("overflow_features")
    spark.createDataFrame(rows).write.format("delta").saveAsTable(f"{db}.{source}")
    fine = [r for r in rows if r["client_id"] != 7]
    spark.createDataFrame(fine).write.format("delta").saveAsTable(f"{db}.{source}_fine")
    for ref in ("overflow", "overflow-frame"):
        target = _table("overflow_scores")
        with pytest.raises(ModelOpsError) as info:
            run_batch(spark, ref, source, target, registry=registry, settings=settings)
        message = str(info.value)
        assert f"model {ref}@1 returned inf for 'p' of row" in message, message
        assert "outputs must be finite numbers" in message
        assert "\n" not in message
        assert not spark.catalog.tableExists(f"{db}.{target}")  # nothing written
        # the same model scores rows whose outputs are finite; a frame's NaN in a nullable field is a null
        done = run_batch(spark, ref, f"{source}_fine", target, registry=registry, settings=settings)
        assert done.rows == len(fine)
        assert spark.table(f"{db}.{target}").filter("share is not null").count() == 0


@in_process_pass
def test_literal_and_enum_outputs_are_table_columns_equal_to_serving(
    spark: Any, spark_settings: ThimbleSettings, registry: Registry
) -> None:
    settings = _settings(spark_settings, registry)
    db = spark_settings.warehouse.database
    registry.save(risk, pickle_function=True)
    rows = churn_sample(30, seed=2)
    source, target = _table("risk_features"), _table("risk_scores")
    spark.createDataFrame(rows).write.format("delta").saveAsTable(f"{db}.{source}")
    result = run_batch(
        spark, "risk", source, target, keep=["client_id"], registry=registry, settings=settings
    )
    assert result.rows == 30
    out = spark.table(f"{db}.{target}")
    types = {f.name: f.dataType.simpleString() for f in out.schema.fields}
    assert {k: types[k] for k in ("band", "level", "flagged", "band_enum", "tier")} == {
        "band": "string",
        "level": "bigint",
        "flagged": "boolean",
        "band_enum": "string",
        "tier": "bigint",
    }
    fields = ["p_churn", "band", "level", "flagged", "band_enum", "tier"]
    got = {r["client_id"]: {f: r[f] for f in fields} for r in out.collect()}
    served = registry.load("risk").predict(rows)  # the JSON the server returns
    assert [got[r["client_id"]] for r in rows] == served
    assert {p["tier"] for p in served} == {None, 1, 2}


@in_process_pass
def test_where_scores_only_the_rows_it_keeps_and_is_recorded(
    spark: Any, spark_settings: ThimbleSettings, saved_churn: Registry
) -> None:
    settings = _settings(spark_settings, saved_churn)
    db = spark_settings.warehouse.database
    rows = [r | {"is_current": r["client_id"] % 4 != 0} for r in churn_sample(40, seed=3)]
    source, target = _table("journal"), _table("current_scores")
    spark.createDataFrame(rows).write.format("delta").saveAsTable(f"{db}.{source}")
    result = run_batch(
        spark, "churn@prod", source, target, where="is_current", registry=saved_churn, settings=settings
    )
    assert result.rows == 30
    assert result.where == "is_current"
    ids = {r["client_id"] for r in spark.table(f"{db}.{target}").select("client_id").collect()}
    assert ids == {r["client_id"] for r in rows if r["is_current"]}
    commit = spark.sql(f"DESCRIBE HISTORY {db}.{target}").select("userMetadata").first()[0]
    assert json.loads(commit)["thimble"]["metadata"]["where"] == "is_current"
    (record,) = Tracker(f"{saved_churn.root}/_tracking.sqlite").records("churn", 1, "batch")
    assert record.info["where"] == "is_current"
    none = run_batch(
        spark, "churn@prod", source, target, where="client_id < 0", registry=saved_churn, settings=settings
    )
    assert (none.rows, none.output_version, spark.table(f"{db}.{target}").count()) == (0, 1, 0)

    for bad, reason in [
        ("no_such_column > 1", "no_such_column"),
        ("client_id >", "client_id >"),
        (" ", "empty"),
    ]:
        with pytest.raises(ModelOpsError) as info:
            run_batch(spark, "churn@prod", source, target, where=bad, registry=saved_churn, settings=settings)
        assert reason in str(info.value)
        assert "\n" not in str(info.value)


def test_spark_workers_run_this_interpreter(spark: Any) -> None:
    import pandas as pd

    def where_am_i(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for _ in batches:
            yield pd.DataFrame({"python": [sys.executable]})

    (row,) = spark.range(1).mapInPandas(where_am_i, "python string").collect()
    assert row["python"] == sys.executable


class _Tagged(BaseModel):
    id: int
    tags: dict[str, int]
    scores: list[float] = []


class _TagCount(BaseModel):
    n: int


@in_process_pass
def test_poison_rows_are_counted_with_their_reason_and_every_good_row_is_scored(
    spark: Any, spark_settings: ThimbleSettings, saved_churn: Registry, churn_clf: Any
) -> None:
    """Nulls in required fields, NaN, infinities, out-of-range values, huge strings and nested garbage."""
    from pyspark.sql import types as T

    @model(name="tagged")
    def tagged(ctx: ModelContext, rows: list[_Tagged]) -> list[_TagCount]:
        return [_TagCount(n=len(r.tags) + len(r.scores)) for r in rows]

    saved_churn.save(overflow_frame, pickle_function=True)
    saved_churn.save(tagged, pickle_function=True)
    settings = _settings(spark_settings, saved_churn)
    db = spark_settings.warehouse.database
    huge = "s" * 1_000_000 + "\x1b[2J\u202e"
    good = [(r["client_id"], r["orders_7d"], float(r["spend_7d"]), huge) for r in churn_sample(50, seed=3)]
    good = [g for g in good if g[0] != 7]  # (overflow-frame's infinite client)
    poison = [
        (None, 1, 1.0, "null id"),
        (1_000_001, 1, float("nan"), "nan spend"),
        (1_000_002, 1, float("inf"), "inf spend"),
        (1_000_003, -5, 1.0, "negative orders"),
        (10**15, 1, 1.0, "huge id"),
        (1_000_004, None, None, "nulls"),
    ]
    schema = T.StructType(
        [
            T.StructField("client_id", T.LongType()),
            T.StructField("orders_7d", T.IntegerType()),
            T.StructField("spend_7d", T.DoubleType()),
            T.StructField("segment", T.StringType()),
        ]
    )
    source = _table("poison_features")
    spark.createDataFrame(good + poison, schema).write.format("delta").saveAsTable(f"{db}.{source}")
    for ref in ("churn@prod", "overflow-frame"):
        target = _table("poison_scores")
        result = run_batch(spark, ref, source, target, registry=saved_churn, settings=settings)
        assert (result.rows, result.rejected, result.metrics["rejected"]) == (len(good), 6, 6.0), ref
        assert result.rejected_reasons == {
            "client_id: Input should be a valid integer": 1,
            "client_id: Input should be less than or equal to 1000000000000": 1,
            "orders_7d: Input should be a valid integer": 1,
            "orders_7d: Input should be greater than or equal to 0": 1,
            "spend_7d: Input should be a valid number": 1,  # NaN: a missing value, as null
            "spend_7d: Input should be less than or equal to 1000000": 1,
        }, ref
        out = spark.table(f"{db}.{target}")
        assert sorted(r["client_id"] for r in out.select("client_id").collect()) == sorted(g[0] for g in good)
        assert {r["segment"] for r in out.select("segment").distinct().collect()} == {huge}

    nested = T.StructType(
        [
            T.StructField("id", T.LongType()),
            T.StructField("tags", T.MapType(T.StringType(), T.LongType())),
            T.StructField("scores", T.ArrayType(T.DoubleType())),
        ]
    )
    garbage_key = "k\x1b[31m" + "x" * 10_000
    rows = [
        (1, {"a": 1}, [0.5]),
        (2, {garbage_key: None}, []),
        (3, None, [1.0]),
        (4, {"b": 2}, [None, 1.0]),
        (5, {}, None),
    ]
    source = _table("nested_garbage")
    spark.createDataFrame(rows, nested).write.format("delta").saveAsTable(f"{db}.{source}")
    result = run_batch(spark, "tagged", source, _table("tag_counts"), registry=saved_churn, settings=settings)
    assert (result.rows, result.rejected) == (1, 4), result.rejected_reasons
    reasons = result.rejected_reasons
    assert sum(reasons.values()) == 4
    assert reasons["tags: Input should be a valid dictionary"] == 1
    assert reasons["scores.0: Input should be a valid number"] == 1
    assert reasons["scores: Input should be a valid list"] == 1
    (key_reason,) = [r for r in reasons if r.startswith("tags.k")]
    assert "\x1b" not in key_reason
    assert key_reason.startswith("tags.k\\x1b[31mxxx")
    assert len(key_reason) < 300
