"""The prediction log closes the loop: served requests land in a typed warehouse table through thimble-etl."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from modelops_testmodels import risk
from typer.testing import CliRunner

from thimble.common.config import ThimbleSettings
from thimble.etl import load_table_config, run_table
from thimble.etl.cli import app as etl_app
from thimble.modelops import Registry, prediction_table_config
from thimble.modelops.cli import app
from thimble.modelops.config import load_modelops_settings
from thimble.modelops.server import create_app

pytestmark = pytest.mark.integration
runner = CliRunner()


def _rows(n: int, start: int) -> list[dict[str, Any]]:
    return [
        {"client_id": start + i, "orders_7d": (start + i) % 15, "spend_7d": 10.5 * (start + i)}
        for i in range(n)
    ]


def test_served_predictions_load_into_a_typed_warehouse_table(
    saved_churn: Registry,
    redis_url: str,
    live: Callable[..., Any],
    kafka_topic: Callable[..., str],
    spark: Any,
    spark_settings: ThimbleSettings,
    tmp_path: Path,
) -> None:
    registry = saved_churn
    registry.save(risk, pickle_function=True)
    topic = kafka_topic("predictions")
    settings = load_modelops_settings(
        overrides={
            "online_store": {"url": redis_url, "key_prefix": f"test-{uuid.uuid4().hex[:8]}"},
            "modelops": {"registry": registry.url, "server": {"prediction_log_topic": topic}},
        }
    )
    server = live(create_app(settings=settings, refs=["risk@1", "churn@prod"], registry=registry))
    served: dict[str, list[dict[str, Any]]] = {}
    with httpx.Client(base_url=server.url) as http:
        for i in range(8):
            rows = _rows(1 + i % 3, 10 * i)  # one, two or three rows per request
            reply = http.post("/v1/models/risk@1/predict", json=rows if len(rows) > 1 else rows[0])
            assert reply.status_code == 200, reply.text
            served[reply.json()["request_id"]] = rows
        other = http.post("/v1/models/churn@prod/predict", json=_rows(2, 500))  # same topic, other model
        assert other.status_code == 200
    server.__exit__()  # the server sends every buffered record before it stops

    table = f"risk_log_{uuid.uuid4().hex[:8]}"
    file = tmp_path / "risk_predictions.yaml"
    args = ["prediction-table", "risk@1", "--topic", topic, "--table", table, "--output", str(file)]
    written = runner.invoke(app, [*args, "--registry", registry.url])
    assert written.exit_code == 0, written.output
    checked = runner.invoke(etl_app, ["check", str(file)])
    assert checked.exit_code == 0, checked.output
    assert checked.output.startswith("ok:")
    assert f"({table}, append)" in checked.output

    result = run_table(load_table_config(file), spark=spark, settings=spark_settings)
    assert result.status == "committed", result
    assert (result.rows_read, result.rows_cleansed, result.rows_quarantined) == (9, 8, 0)
    assert result.metrics["row_count"] == 8
    assert (result.metrics["mean:latency_ms"] or 0) > 0

    df = spark.table(f"{spark_settings.warehouse.database}.{table}")
    types = dict(df.dtypes)
    assert types["version"] == "int"
    assert types["time"] == "bigint"
    assert types["predicted_at"] == "timestamp"
    assert types["prediction_date"] == "date"
    assert types["inputs"] == "array<struct<client_id:bigint,orders_7d:bigint,spend_7d:double>>"
    assert types["outputs"] == (
        "array<struct<p_churn:double,band:string,level:bigint,flagged:boolean,band_enum:string,tier:bigint>>"
    )
    loaded = registry.load("risk@1")
    got = {r["request_id"]: r.asDict(recursive=True) for r in df.collect()}
    assert set(got) == set(served)
    for request_id, rows in served.items():
        record = got[request_id]
        assert (record["model"], record["version"]) == ("risk", 1)
        assert record["inputs"] == rows
        assert record["outputs"] == loaded.predict(rows)
        assert record["predicted_at"].date() == record["prediction_date"]
        assert int(record["predicted_at"].timestamp() * 1000) == record["time"]

    again = run_table(load_table_config(file), spark=spark, settings=spark_settings)
    assert again.status == "no_new_data"
    assert spark.table(f"{spark_settings.warehouse.database}.{table}").count() == 8


def test_prediction_table_cli_prints_the_config_and_explains_bad_input(saved_churn: Registry) -> None:
    url = saved_churn.url
    printed = runner.invoke(app, ["prediction-table", "churn@prod", "--topic", "preds", "--registry", url])
    assert printed.exit_code == 0, printed.output
    config = yaml.safe_load(printed.output)
    assert config == prediction_table_config(saved_churn.load("churn@1"), "preds")
    assert config["table"] == "churn_prediction_log"
    assert config["source"] == {"type": "kafka", "topic": "preds", "starting_offsets": "earliest"}

    unknown = runner.invoke(app, ["prediction-table", "nope", "--topic", "preds", "--registry", url])
    assert unknown.exit_code == 2
    assert "nope" in unknown.output
    assert "Traceback" not in unknown.output

    bad = runner.invoke(
        app, ["prediction-table", "churn", "--topic", "preds", "--table", "bad-name", "--registry", url]
    )
    assert bad.exit_code == 2
    assert "a table is 'name' or 'database.name'" in bad.output
