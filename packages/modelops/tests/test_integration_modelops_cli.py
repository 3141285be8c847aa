from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import joblib
import pytest
from typer.testing import CliRunner

from thimble.modelops import Registry
from thimble.modelops.cli import app
from thimble.testing import ServerProcess, free_port, wait_until

pytestmark = pytest.mark.integration
runner = CliRunner()


def _run(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_save_list_show_alias(tmp_path: Path, churn_clf: object) -> None:
    reg = str(tmp_path / "models")
    joblib.dump(churn_clf, tmp_path / "clf.joblib")
    (tmp_path / "sample.json").write_text(
        json.dumps([{"client_id": 1, "orders_7d": 2, "spend_7d": 3.0}] * 20)
    )
    saved = _run(
        "save",
        "modelops_testmodels:churn",
        "--artifact",
        f"clf={tmp_path / 'clf.joblib'}",
        "--training-data",
        "warehouse.client_features@v12",
        "--metric",
        "auc=0.81",
        "--alias",
        "staging",
        "--sample",
        str(tmp_path / "sample.json"),
        "--registry",
        reg,
    )
    assert saved.exit_code == 0, saved.output
    assert "saved churn@1" in saved.output
    listed = _run("list", "--registry", reg)
    assert "churn" in listed.output
    assert "staging -> 1" in listed.output
    shown = _run("show", "churn@staging", "--registry", reg)
    assert "training data: warehouse.client_features@v12" in shown.output
    assert "features: client-features by client_id -> orders_7d, spend_7d" in shown.output
    assert "sample: 20 rows" in shown.output
    assert (
        _run("alias", "churn", "prod", "staging", "--registry", reg)
        .output.strip()
        .endswith("churn@prod -> 1")
    )
    assert Registry(reg).aliases("churn") == {"prod": 1, "staging": 1}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "nope"], "no model 'nope'"),
        (["show", "churn@canary"], "churn has no alias 'canary'; aliases: prod -> 1"),
        (["alias", "churn", "prod", "9"], "churn has no version 9"),
        (["save", "modelops_testmodels:missing"], "cannot import modelops_testmodels:missing"),
        (
            ["save", "modelops_testmodels:churn", "--artifact", "clf=/no/such.joblib"],
            "artifact 'clf': file /no/such.joblib does not exist",
        ),
        (["serve", "churn@canary"], "churn has no alias 'canary'"),
        (
            ["save", "modelops_testmodels:churn", "--metric", "auc=nan"],
            "metrics must be finite numbers: auc=nan",
        ),
        (
            ["save", "modelops_testmodels:churn", "--metric", "auc=1e999"],
            "metrics must be finite numbers: auc=inf",
        ),
    ],
)
def test_clear_errors_without_tracebacks(saved_churn: Registry, args: list[str], message: str) -> None:
    result = runner.invoke(app, [*args, "--registry", saved_churn.url])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_serve_runs_uvicorn_workers_from_the_registry(
    saved_churn: Registry, redis_url: str, tmp_path: Path
) -> None:
    port = free_port()
    env = os.environ | {"THIMBLE_ONLINE_STORE__URL": redis_url, "THIMBLE_LOGGING__FORMAT": "json"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    cli = Path(sys.executable).parent / "thimble-modelops"
    url = f"http://127.0.0.1:{port}"
    command = [
        cli,
        "serve",
        "churn@prod",
        "--port",
        str(port),
        "--workers",
        "2",
        "--registry",
        saved_churn.url,
    ]
    with ServerProcess(
        command,
        ready_url=f"{url}/readyz",
        log=tmp_path / "serve.log",
        env=env,
        timeout=240,  # two spawned workers import everything: slow on a loaded machine
    ):
        row = {"client_id": 1, "orders_7d": 2, "spend_7d": 30.0}
        for _ in range(10):
            got = httpx.post(f"{url}/v1/models/churn@prod/predict", json=row, timeout=10)
            assert got.status_code == 200
        assert got.json()["predictions"] == saved_churn.load("churn@1").predict([row])
        # Each worker writes its requests' metrics before every scrape it answers, and every second.
        wait_until(
            lambda: (
                'thimble_modelops_predictions_total{model="churn",version="1"} 10.0'
                in httpx.get(f"{url}/metrics", timeout=10).text
            ),
            timeout=10,
            what="both workers' predictions in /metrics",
        )


USER_MODEL = """
from pydantic import BaseModel

from thimble.modelops import ModelContext, model


class In(BaseModel):
    x: float


class Out(BaseModel):
    doubled: float


@model(name="doubler")
def predict(ctx: ModelContext, rows: list[In]) -> list[Out]:
    return [Out(doubled=2 * r.x) for r in rows]
"""


def test_serve_imports_the_users_code_from_the_current_folder(tmp_path: Path, redis_url: str) -> None:
    project = tmp_path / "project"
    project.mkdir()
    module = f"user_models_{os.getpid()}"
    (project / f"{module}.py").write_text(USER_MODEL)
    reg = str(tmp_path / "models")
    cli = Path(sys.executable).parent / "thimble-modelops"
    env = os.environ | {"THIMBLE_ONLINE_STORE__URL": redis_url, "THIMBLE_LOGGING__FORMAT": "json"}
    env.pop("PYTHONPATH", None)
    saved = subprocess.run(
        [str(cli), "save", f"{module}:predict", "--registry", reg],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert saved.returncode == 0, saved.stderr
    assert Registry(reg).info("doubler").function.import_path == f"{module}:predict"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [cli, "serve", "doubler", "--port", str(port), "--registry", reg]
    with ServerProcess(command, ready_url=f"{url}/readyz", log=tmp_path / "serve.log", env=env, cwd=project):
        got = httpx.post(f"{url}/v1/models/doubler/predict", json={"x": 2.5}, timeout=10)
        assert got.json()["predictions"] == [{"doubled": 5.0}]
