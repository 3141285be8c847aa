from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
from modelops_testmodels import ChurnInput, RiskOutput, risk
from pydantic import BaseModel

from thimble.etl import parse_table_config
from thimble.modelops import LoadedModel, ModelContext, ModelOpsError, model, prediction_table_config

pytestmark = pytest.mark.unit


class Address(BaseModel):
    city: str
    zip: int | None = None


class Rich(BaseModel):
    tags: list[str]
    scores: dict[str, float]
    history: tuple[int, ...] = ()
    home: Address | None = None
    visits: list[Address] = []
    key: int | str = 0


class Camel(BaseModel):
    clientId: int


class Anything(BaseModel):
    blob: Any


def _loaded(input: type[BaseModel], output: type[BaseModel] = RiskOutput) -> LoadedModel:
    @model(name="typed", input=input, output=output)
    def fn(ctx: ModelContext, df: pd.DataFrame) -> pd.DataFrame:
        return df

    return LoadedModel(fn, None, {})


def test_the_config_is_a_valid_etl_config_typed_from_the_model() -> None:
    config = prediction_table_config(LoadedModel(risk, None, {}), "predictions")
    parsed = parse_table_config(config)
    assert parsed.table == "risk_prediction_log"
    assert parsed.write.mode == "append"
    assert parsed.write.partition_by == ["prediction_date"]
    assert parsed.schema_.columns == {
        "request_id": "string",
        "model": "string",
        "version": "int",
        "alias": "string",
        "role": "string",
        "time": "bigint",
        "latency_ms": "double",
        "inputs": "array<struct<`client_id`:bigint,`orders_7d`:bigint,`spend_7d`:double>>",
        "outputs": "array<struct<`p_churn`:double,`band`:string,`level`:bigint,`flagged`:boolean,"
        "`band_enum`:string,`tier`:bigint>>",
    }
    assert [m.metric_name for m in parsed.quality.metrics] == ["row_count", "mean:latency_ms"]
    assert config["cleanse"][0] == {"step": "drop_where", "condition": "model <> 'risk'"}
    assert prediction_table_config(LoadedModel(risk, None, {}), "p", "db.preds")["table"] == "db.preds"


def test_containers_and_nested_models_become_nested_columns() -> None:
    columns = prediction_table_config(_loaded(Rich, ChurnInput), "p")["schema"]["columns"]
    assert columns["inputs"] == (
        "array<struct<`tags`:array<string>,`scores`:map<string,double>,`history`:array<bigint>,"
        "`home`:struct<`city`:string,`zip`:bigint>,`visits`:array<struct<`city`:string,`zip`:bigint>>,"
        "`key`:string>>"
    )


def test_field_names_keep_their_case() -> None:
    columns = prediction_table_config(_loaded(Camel), "p")["schema"]["columns"]
    assert columns["inputs"].startswith("array<struct<`clientId`:bigint")


@pytest.mark.parametrize(
    ("input", "message"),
    [
        (Anything, "input.blob: Any has no warehouse column type; use bool, int, float, str"),
    ],
)
def test_fields_without_a_column_type_are_named(input: type[BaseModel], message: str) -> None:
    with pytest.raises(ModelOpsError, match=message):
        prediction_table_config(_loaded(input), "p")


@pytest.mark.parametrize(("topic", "table"), [("", None), ("p", "bad-name"), ("p", "a.b.c")])
def test_bad_topic_or_table_is_a_clear_error(topic: str, table: str | None) -> None:
    with pytest.raises(ModelOpsError, match=r"topic|a table is 'name' or 'database\.name'"):
        prediction_table_config(LoadedModel(risk, None, {}), topic, table)
