from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from modelops_testmodels import scorer

from thimble.modelops import Registry
from thimble.modelops.config import load_modelops_settings
from thimble.modelops.server import create_app

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_schemathesis_finds_no_server_error(
    saved_churn: Registry, numbers_clf: object, redis_url: str, live: Callable[..., Any], tmp_path: Path
) -> None:
    saved_churn.save(scorer, artifacts={"clf": numbers_clf}, pickle_function=True)
    settings = load_modelops_settings(
        overrides={
            "online_store": {"url": redis_url, "key_prefix": f"test-{uuid.uuid4().hex[:8]}"},
            "modelops": {"registry": saved_churn.url, "server": {"auth_token": "tok-1234567890abcdef"}},
        }
    )
    server = live(create_app(settings=settings, refs=["churn@prod", "scorer"], registry=saved_churn))
    # churn fills features from the online store: a schema-valid row of an entity the store does not
    # know is refused (422, naming the feature); an inference request names the model's own tensors, and
    # a tensor whose data does not fit its shape or datatype (which JSON Schema cannot say) is a 400
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        "[[operations]]\n"
        'include-path-regex = "^/v1/models/churn"\n'
        'checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "422"]\n'
        "[[operations]]\n"
        'include-path-regex = "/infer$"\n'
        'checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "404", "422"]\n'
    )
    cli = Path(sys.executable).parent / "schemathesis"
    result = subprocess.run(
        [
            str(cli),
            "--config-file",
            str(config),
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            "all",
            "--mode",
            "all",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--max-examples",
            "25",
            "--seed",
            "7",
            "--generation-database",
            "none",
            "--header",
            "Authorization: Bearer tok-1234567890abcdef",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert re.search(r"Tested: 1[0-9]", result.stdout), result.stdout[-3000:]
    assert re.search(r"(\d{3,}) generated, \1 passed", result.stdout), result.stdout[-3000:]
    for phase in ("Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in result.stdout, result.stdout[-3000:]
