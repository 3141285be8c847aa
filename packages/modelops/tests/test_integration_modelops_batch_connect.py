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


def test_batch_scoring_and_its_drift_over_connect(
    saved_churn: Registry, thimble_settings: ThimbleSettings, tmp_path: Path
) -> None:
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
