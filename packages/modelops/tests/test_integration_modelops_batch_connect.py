"""Batch scoring over Spark Connect (the local stack's server), whatever session the other tests use.

The scoring runs in a process of its own: pyspark switches a whole process to Spark Connect once it
opens a Connect session.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from thimble.common.config import ThimbleSettings, connect_address
from thimble.modelops import Registry
from thimble.testing import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HERE = Path(__file__).parent
STACK_CONNECT = f"sc://127.0.0.1:{os.environ.get('THIMBLE_STACK_SPARK_PORT', '15002')}"


def _answers(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


def _connect_config(thimble_settings: ThimbleSettings, tmp_path: Path) -> tuple[str, Path]:
    """The stack's Spark Connect address, once it answers, and a settings file using it."""
    url = thimble_settings.spark.remote or STACK_CONNECT
    address = connect_address(url)
    assert address is not None, url
    wait_until(
        lambda: _answers(*address), 60, what=f"Spark Connect at {url} (start it with `./dev stack up`)"
    )
    config = tmp_path / "thimble.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "warehouse": {
                    "location": str(tmp_path / "tables"),
                    "metastore": str(tmp_path / "metastore"),
                    "database": f"connect_{uuid.uuid4().hex[:10]}",
                },
                "spark": {"remote": url, "shuffle_partitions": 2},
            }
        )
    )
    return url, config


def test_batch_scoring_and_its_drift_over_connect(
    saved_churn: Registry, thimble_settings: ThimbleSettings, tmp_path: Path
) -> None:
    url, config = _connect_config(thimble_settings, tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("THIMBLE_SPARK__")}
    done = subprocess.run(
        [sys.executable, str(HERE / "batch_over_connect.py"), saved_churn.url],
        env=env | {"THIMBLE_CONFIG": str(config), "THIMBLE_SPARK__REMOTE": url},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    first, again = outcome["first"], outcome["again"]
    assert (first["output_version"], again["output_version"], outcome["rows"]) == (0, 1, 800)
    assert first["rows"] == again["rows"] == 400
    metrics = first["metrics"]
    assert metrics["prediction.p_churn.nulls"] == 0
    for stat in ("min", "max", "mean"):
        assert math.isclose(metrics[f"quality.{stat}:p_churn"], metrics[f"prediction.p_churn.{stat}"])
    assert metrics["psi.input.spend_7d"] < 0.25
    assert "psi.output.p_churn" in metrics
    # The appended run is measured on its own rows, not on the table's.
    assert again["metrics"]["quality.row_count"] == 400
    assert math.isclose(again["metrics"]["prediction.p_churn.mean"], metrics["prediction.p_churn.mean"])


MODEL_MODULE = """
from pydantic import BaseModel

from thimble.modelops import ModelContext, model


class Client(BaseModel):
    client_id: str
    spend_7d: float


class Risk(BaseModel):
    risk: float


@model(name="spend-risk")
def spend_risk(ctx: ModelContext, rows: list[Client]) -> list[Risk]:
    return [Risk(risk=min(1.0, r.spend_7d / ctx.artifacts["scale"])) for r in rows]
"""

SCORE_SCRIPT = """
import json, sys

from riskproj.model import spend_risk
from thimble.common.spark import build_spark_session
from thimble.modelops import Registry
from thimble.modelops.batch import run_batch
from thimble.modelops.config import load_modelops_settings

settings = load_modelops_settings(overrides={"modelops": {"registry": sys.argv[1]}})
registry = Registry(sys.argv[1])
registry.save(spend_risk, artifacts={"scale": 100.0}, sample=[{"client_id": "c0", "spend_7d": 1.0}])
spark = build_spark_session(settings)
source = f"{settings.warehouse.database}.spend"
spark.createDataFrame([(f"c{i}", float(i)) for i in range(50)], "client_id string, spend_7d double").write.format(
    "delta"
).saveAsTable(source)
result = run_batch(spark, "spend-risk@1", source, "spend_risk_scores", registry=registry, settings=settings)
rows = spark.table(f"{settings.warehouse.database}.spend_risk_scores").select("client_id", "risk").collect()
print(json.dumps({"rows": result.rows, "risk": {r.client_id: r.risk for r in rows}}))
spark.stop()
"""


def test_a_model_saved_from_the_users_own_folder_scores_over_connect(
    thimble_settings: ThimbleSettings, tmp_path: Path
) -> None:
    """The model's code is in the user's project, not installed: its package reaches the server's workers."""
    url, config = _connect_config(thimble_settings, tmp_path)
    project = tmp_path / "project"
    (project / "riskproj").mkdir(parents=True)
    (project / "riskproj" / "__init__.py").write_text("")
    (project / "riskproj" / "model.py").write_text(MODEL_MODULE)
    (project / "score.py").write_text(SCORE_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("THIMBLE_SPARK__", "PYTHONPATH"))}

    done = subprocess.run(
        [sys.executable, "score.py", str(tmp_path / "registry")],
        cwd=project,
        env=env | {"THIMBLE_CONFIG": str(config), "THIMBLE_SPARK__REMOTE": url},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["rows"] == 50
    assert outcome["risk"] == {f"c{i}": i / 100 for i in range(50)}
