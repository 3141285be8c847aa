"""Lineage on the real stack: a model version back to its tables' versions and the consumer offsets they
were loaded up to (thimble-etl on Spark/Delta), and a served request back to its model version and features
(the prediction log on Kafka)."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from modelops_testmodels import churn
from rich.console import Console
from typer.testing import CliRunner

from thimble.common.config import ThimbleSettings
from thimble.common.features import landing_folder
from thimble.etl import parse_table_config, run_table
from thimble.modelops import Registry
from thimble.modelops.cli import app
from thimble.modelops.config import load_modelops_settings
from thimble.modelops.lineage import model_lineage, model_tree
from thimble.modelops.server import create_app
from thimble.modelops.training import LabelTable, PinnedFeatureSet, TrainingSetSpec

pytestmark = pytest.mark.integration
runner = CliRunner()


def _features_table(spark: Any, settings: ThimbleSettings) -> str:
    """A table thimble-etl loaded from landed files of partitions 0 and 1 of ``client-events``."""
    name = f"lineage_features_{uuid.uuid4().hex[:8]}"
    folder = Path(landing_folder(settings.warehouse.landing, name, "2026-01-01"))
    folder.mkdir(parents=True)
    offsets = [(0, 40), (0, 41), (1, 17)]
    landed = pa.table(
        {
            "client_id": [1, 2, 3],
            "orders_7d": [2, 0, 5],
            "_kafka_topic": ["client-events"] * 3,
            "_kafka_partition": pa.array([p for p, _ in offsets], pa.int32()),
            "_kafka_offset": pa.array([o for _, o in offsets], pa.int64()),
        }
    )
    pq.write_table(landed, folder / "part-0.parquet")
    config = parse_table_config(
        {
            "table": name,
            "source": {"type": "landing", "dataset": name},
            "schema": {"columns": {"client_id": "bigint", "orders_7d": "bigint"}},
            "write": {"mode": "append"},
        }
    )
    assert run_table(config, spark=spark, settings=settings).committed
    return f"{settings.warehouse.database}.{name}"


def test_a_model_version_leads_to_its_tables_versions_and_consumer_offsets(
    saved_churn: Registry, spark: Any, spark_settings: ThimbleSettings, tmp_path: Path
) -> None:
    features = _features_table(spark, spark_settings)
    labels = f"{features}_labels"  # built by thimble-etl from the features table
    built = parse_table_config(
        {
            "table": labels.rsplit(".", 1)[1],
            "source": {"type": "table", "table": features.rsplit(".", 1)[1]},
            "write": {"mode": "overwrite"},
        }
    )
    assert run_table(built, spark=spark, settings=spark_settings).committed
    spec = TrainingSetSpec(
        at="label_time",
        labels=LabelTable(table=labels, version=0),
        feature_sets=(
            PinnedFeatureSet(
                name="client-features",
                table=features,
                version=0,
                entity_key="client_id",
                features=("orders_7d",),
            ),
        ),
    )
    saved_churn.save(churn, training_set=spec, aliases=["candidate"], pickle_function=True)

    found = model_lineage(saved_churn, "churn@candidate", spark=spark, settings=spark_settings)
    assert (found.ref, found.aliases) == ("churn@2", ["candidate"])
    assert found.training_set == spec.model_dump(mode="json")
    feature_table, label_table = found.tables
    assert (feature_table.role, feature_table.table, feature_table.version) == (
        "feature set client-features",
        features,
        0,
    )
    assert feature_table.offsets == {"client-events": {0: 41, 1: 17}}
    assert (label_table.role, label_table.table, label_table.version, label_table.offsets) == (
        "labels",
        labels,
        0,
        {},
    )
    (source,) = label_table.upstream  # followed back to the table it was built from, at the version read
    assert (source.role, source.table, source.version) == ("built from", features, 0)
    assert source.offsets == {"client-events": {0: 41, 1: 17}}

    out = io.StringIO()
    Console(file=out, width=250).print(model_tree(found))  # what the command prints
    text = " ".join(out.getvalue().split())
    assert f"feature set client-features: {features}@v0" in text
    assert "loaded up to client-events [0] 41, [1] 17" in text
    assert f"labels: {labels}@v0" in text
    assert f"built from: {features}@v0" in text
    as_json = json.loads(json.dumps(found.to_dict()))  # what --json prints
    assert as_json["tables"][0]["offsets"] == {"client-events": {"0": 41, "1": 17}}

    config = tmp_path / "thimble.yaml"
    config.write_text(yaml.safe_dump({"warehouse": spark_settings.warehouse.model_dump()}))
    common = ["--registry", saved_churn.url, "--config", str(config)]
    older = runner.invoke(app, ["lineage", "churn@1", *common])  # saved with training_data only
    assert older.exit_code == 0, older.output
    assert "training data: warehouse.client_features@v12" in older.output
    assert "no table 'warehouse.client_features' in the warehouse" in " ".join(older.output.split())


def test_a_served_request_leads_to_its_model_version_and_the_features_it_used(
    saved_churn: Registry,
    redis_url: str,
    live: Callable[..., Any],
    kafka_topic: Callable[..., str],
    kafka_config: dict[str, Any],
    tmp_path: Path,
) -> None:
    topic = kafka_topic("lineage-predictions", partitions=2)
    settings = load_modelops_settings(
        overrides={
            "online_store": {"url": redis_url, "key_prefix": f"test-{uuid.uuid4().hex[:8]}"},
            "modelops": {"registry": saved_churn.url, "server": {"prediction_log_topic": topic}},
        }
    )
    server = live(create_app(settings=settings, refs=["churn@prod"], registry=saved_churn))
    rows = [
        {"client_id": 7, "orders_7d": 1, "spend_7d": 12.5},
        {"client_id": 8, "orders_7d": 9, "spend_7d": 0.0},
    ]
    with httpx.Client(base_url=server.url) as http:
        answers = [http.post("/v1/models/churn@prod/predict", json=rows[i:]) for i in range(2)]
    assert [a.status_code for a in answers] == [200, 200]
    server.__exit__()  # the server sends every buffered record before it stops
    request_id = answers[0].json()["request_id"]

    config = tmp_path / "thimble.yaml"
    config.write_text(yaml.safe_dump({"kafka": {"bootstrap_servers": kafka_config["bootstrap.servers"]}}))
    common = ["--topic", topic, "--registry", saved_churn.url, "--config", str(config)]
    found = runner.invoke(app, ["lineage", "--request-id", request_id, "--json", *common])
    assert found.exit_code == 0, found.output
    (record,) = json.loads(found.output)
    assert (record["model"], record["version"], record["alias"], record["role"]) == (
        "churn",
        1,
        "churn@prod",
        "primary",
    )
    assert (record["feature_set"], record["entity_key"]) == ("client-features", "client_id")
    assert record["features"] == rows
    assert record["outputs"] == answers[0].json()["predictions"]

    shown = runner.invoke(app, ["lineage", "--request-id", request_id, *common])
    assert shown.exit_code == 0, shown.output
    assert "churn@1 as churn@prod (primary)" in shown.output
    assert "features of client-features" in shown.output

    for request, message in (
        ("no-such-request", "no prediction record of request 'no-such-request'"),
        ("bad id\n{}", "is not a request id"),
    ):
        failed = runner.invoke(app, ["lineage", "--request-id", request, *common])
        assert failed.exit_code == 2, failed.output
        assert message in failed.output
        assert len(failed.output.strip().splitlines()) == 1, failed.output
