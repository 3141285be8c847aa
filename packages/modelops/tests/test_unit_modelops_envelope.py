from __future__ import annotations

import re

import pandas as pd
import pytest
from modelops_testmodels import (
    ChurnInput,
    ChurnScore,
    Numbers,
    Score,
    churn,
    churn_sample,
    overflow,
    overflow_frame,
    scorer,
)
from pydantic import BaseModel

from thimble.modelops import ModelContext, model
from thimble.modelops.envelope import TrainingData
from thimble.modelops.errors import ModelDefinitionError, PredictionError, SchemaMismatchError

pytestmark = pytest.mark.unit


def test_decorator_reads_schemas_and_features_from_the_type_hints() -> None:
    assert churn.flavor == "rows"
    assert churn.input_type is ChurnInput
    assert churn.output_type is ChurnScore
    assert churn.features is not None
    assert churn.features.entity_key == "client_id"
    assert churn.features.fields == ["orders_7d", "spend_7d"]
    assert churn.features.defaults == {"orders_7d": 0}
    assert churn.description.startswith("Churn probability")


def test_dataframe_model_declares_its_schemas() -> None:
    assert scorer.flavor == "frame"
    assert scorer.input_type is Numbers
    assert scorer.output_type is Score


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: model(name="x")(lambda ctx: []), "takes (ctx, rows)"),
        (lambda: model(name="x")(lambda ctx, rows: []), "annotate the rows parameter"),
        (lambda: model(name="Bad Name")(lambda ctx, rows: []), "model name 'Bad Name'"),
        (lambda: model(name="x", features="fs", entity_key="nope")(_typed), "nope not fields of ChurnInput"),
        (lambda: model(name="x", entity_key="client_id")(_typed), "need features="),
        (lambda: model(name="x")(_frame_without_schema), "declares its schemas"),
        (lambda: model(name="x")(_wrong_types), "rows must be list[In]"),
    ],
)
def test_bad_definitions_are_reported_with_the_function(build: object, message: str) -> None:
    with pytest.raises(ModelDefinitionError, match=re.escape(message)):
        build()  # type: ignore[operator]


def _typed(ctx: ModelContext, rows: list[ChurnInput]) -> list[ChurnScore]:
    return []


def _frame_without_schema(ctx: ModelContext, df: pd.DataFrame) -> pd.DataFrame:
    return df


def _wrong_types(ctx: ModelContext, rows: list[int]) -> list[int]:
    return rows


def test_bound_model_validates_runs_and_checks_outputs(churn_clf: object) -> None:
    bound = churn.bind({"clf": churn_clf})
    out = bound.predict(
        [{"client_id": 1, "orders_7d": 0, "spend_7d": 10.0}, {"client_id": 2, "spend_7d": 90.0}]
    )
    assert len(out) == 2
    assert set(out[0]) == {"p_churn", "high_risk"}
    assert out[0]["p_churn"] > out[1]["p_churn"] or out[0]["p_churn"] >= 0.0
    with pytest.raises(SchemaMismatchError, match=r"\[0\]\.spend_7d"):
        bound.predict([{"client_id": 1, "spend_7d": "lots"}])


def test_wrong_number_of_outputs_is_a_prediction_error() -> None:
    class In(BaseModel):
        x: int

    @model(name="short")
    def short(ctx: ModelContext, rows: list[In]) -> list[In]:
        return rows[:-1]

    with pytest.raises(PredictionError, match="returned 1 outputs for 2 rows"):
        short.bind().predict([{"x": 1}, {"x": 2}])


def test_dict_outputs_are_validated_against_the_output_model() -> None:
    class In(BaseModel):
        x: int

    class Out(BaseModel):
        y: float

    @model(name="dicts")
    def dicts(ctx: ModelContext, rows: list[In]) -> list[Out]:
        return [{"y": r.x * 2} for r in rows]  # type: ignore[misc]

    assert dicts.bind().predict([{"x": 2}]) == [{"y": 4.0}]


def test_frame_and_row_paths_agree(numbers_clf: object) -> None:
    bound = scorer.bind({"clf": numbers_clf})
    rows = [{"id": i, "f0": i / 10, "f1": -i / 7, "f2": 0.5, "f3": 1.0 - i} for i in range(5)]
    by_rows = [r["score"] for r in bound.predict(rows)]
    by_frame = bound.predict_frame(pd.DataFrame(rows))["score"].tolist()
    assert by_rows == pytest.approx(by_frame, abs=0, rel=0)


def test_predict_frame_refuses_a_non_finite_output_as_serving_does() -> None:
    rows = pd.DataFrame(churn_sample(10, seed=1)).assign(spend_7d=lambda d: d.spend_7d.abs() + 1)
    for fn in (overflow, overflow_frame):
        with pytest.raises(PredictionError, match=r"returned inf for 'p' of row 7: outputs must be finite"):
            fn.bind().predict_frame(rows)
        fine = fn.bind().predict_frame(rows[rows.client_id != 7])
        assert fine["share"].isna().all()  # None (rows), or NaN in a field that may be null (frame)

    class Out(BaseModel):
        y: float
        ys: list[float]

    @model(name="nan-frame", input=Numbers, output=Out)
    def nan_frame(ctx: ModelContext, df: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"y": df["f0"] / df["f1"], "ys": [[1.0]] * len(df)})

    frame = pd.DataFrame([{"id": i, "f0": 0.0, "f1": float(i), "f2": 0.0, "f3": 0.0} for i in range(3)])
    with pytest.raises(PredictionError, match=r"returned nan for 'y' of row 0"):  # 0/0; y may not be null
        nan_frame.bind().predict_frame(frame)

    @model(name="nested", input=Numbers, output=Out)
    def nested(ctx: ModelContext, df: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"y": 1.0, "ys": [[1.0], [float("inf")], [2.0]]})

    with pytest.raises(PredictionError, match=r"returned a NaN or infinite number in 'ys' of row 1"):
        nested.bind().predict_frame(frame)


@pytest.mark.parametrize(
    ("text", "table", "version"),
    [
        ("warehouse.client_features@v12", "warehouse.client_features", 12),
        ("warehouse.t@v12", "warehouse.t", 12),
        ("warehouse.t", "warehouse.t", None),
        ("client_features", "client_features", None),
        ("_t@v0", "_t", 0),  # a Delta table's first version
        ("w.t@7", "w.t", 7),
    ],
)
def test_training_data_reference(text: str, table: str, version: int | None) -> None:
    assert TrainingData.parse(text) == TrainingData(table=table, version=version)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "warehouse.t@latest",
        "warehouse.t@",
        "@v1",
        "a.b.c@v1",
        "w[/]t@v1",
        "w\x1b[2Jt@v1",
        "w.t; DROP TABLE x",
        "w.t@v\u0661",  # a digit, but not an ASCII one
        "1t@v1",
        "t" * 129,
        "w.t@v1@v2",
    ],
)
def test_a_training_data_reference_outside_the_grammar_is_one_line_naming_where_it_was_given(
    text: str,
) -> None:
    with pytest.raises(ModelDefinitionError) as caught:
        TrainingData.parse(text, "--training-data")
    message = str(caught.value)
    assert message.startswith("--training-data '")
    assert "expected 'table' or 'table@v<version>'" in message
    assert "\n" not in message
    assert "\x1b" not in message
    assert len(message) < 300
