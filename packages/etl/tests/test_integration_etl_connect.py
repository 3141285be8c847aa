"""thimble-etl over Spark Connect (the local stack's server), whatever session the other tests use.

Each check runs in a process of its own (``over_connect.py`` or the CLI): pyspark switches a whole
process to Spark Connect once it opens a Connect session.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from pyspark.sql import SparkSession

from thimble.common.config import ThimbleSettings, connect_address
from thimble.etl.sources import _landing_files
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


@pytest.fixture(scope="module")
def connect_url(thimble_settings: ThimbleSettings) -> str:
    """The Spark Connect server of the settings (``spark.remote``), else the local stack's."""
    url = thimble_settings.spark.remote or STACK_CONNECT
    address = connect_address(url)
    assert address is not None, url
    wait_until(
        lambda: _answers(*address), 60, what=f"Spark Connect at {url} (start it with `./dev stack up`)"
    )
    return url


@pytest.fixture
def connect_env(connect_url: str, tmp_path: Path) -> dict[str, str]:
    """The environment of a process whose Thimble settings reach ``connect_url``, with a fresh warehouse."""
    root = tmp_path / "warehouse"
    settings = {
        "warehouse": {
            "location": str(root / "tables"),
            "landing": str(root / "landing area"),  # a space: file URIs escape it, Hadoop paths do not
            "metastore": str(root / "metastore"),
            "database": f"connect_{uuid.uuid4().hex[:10]}",
        },
        "spark": {"remote": connect_url, "shuffle_partitions": 2},
        "metrics": {"textfile_dir": str(tmp_path / "prom")},
    }
    file = tmp_path / "thimble.yaml"
    file.write_text(yaml.safe_dump(settings))
    env = {k: v for k, v in os.environ.items() if not k.startswith("THIMBLE_SPARK__")}
    return env | {"THIMBLE_CONFIG": str(file), "THIMBLE_SPARK__REMOTE": connect_url, "COLUMNS": "200"}


def _settings(env: dict[str, str]) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(Path(env["THIMBLE_CONFIG"]).read_text())
    return loaded


def _over_connect(env: dict[str, str], check: str, argument: str) -> Any:
    done = subprocess.run(
        [sys.executable, str(HERE / "over_connect.py"), check, argument],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "thimble.etl", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def _land(landing: Path, dataset: str, day: str, name: str, rows: list[dict[str, Any]]) -> Path:
    folder = landing / dataset / f"date={day}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    pd.DataFrame(rows).astype({"client_id": "Int64", "amount": "float64"}).to_parquet(path)
    return path


def test_landed_files_are_listed_alike_over_connect_and_by_the_tests_session(
    spark: SparkSession, connect_env: dict[str, str]
) -> None:
    landing = Path(_settings(connect_env)["warehouse"]["landing"])
    rows = [{"client_id": 1, "amount": 2.0}]
    landed = [
        _land(landing, "events", "2026-01-01", "part-0.parquet", rows),
        _land(landing, "events", "2026-01-02", "part-0.parquet", rows),
    ]
    _land(landing, "events", "2026-01-02", ".part-1.parquet.tmp.parquet", rows)  # a file being written
    _land(landing, "events", "2026-01-02", "_SUCCESS.parquet", rows)
    (landing / "events" / "notes.parquet").write_text("not in a date folder")
    root = str(landing / "events")

    over_connect = _over_connect(connect_env, "listing", root)

    expected = [f"file:{path}" for path in landed]
    assert over_connect == expected
    assert _landing_files(spark, root) == expected
    assert _over_connect(connect_env, "listing", str(landing / "nothing landed")) == []


def test_a_phase_shows_the_stages_the_server_reports(connect_env: dict[str, str]) -> None:
    progress = _over_connect(connect_env, "progress", "run-1:validate")
    assert progress["done"] == progress["known"] >= 3
    assert progress["jobs"] is None  # Spark Connect does not count jobs
    assert progress["tags"] == []  # the phase's tag is gone once it ends


def test_a_write_measures_its_metrics_with_an_aggregation_over_connect(connect_env: dict[str, str]) -> None:
    outcome = _over_connect(connect_env, "one_pass", "amounts")
    assert outcome["created"] == ["committed", 0]
    assert outcome["appended"] == ["committed", 1, 5]
    assert outcome["metrics"]["row_count"] == 5
    assert outcome["metrics"]["mean:amount"] == 2.0
    assert outcome["inserted_by_version"] == {"0": 5, "1": 5}


def test_every_command_runs_over_connect(connect_env: dict[str, str], tmp_path: Path) -> None:
    landing = Path(_settings(connect_env)["warehouse"]["landing"])
    _land(
        landing,
        "clients",
        "2026-01-01",
        "part-0.parquet",
        [
            {"client_id": 1, "amount": 1.0},
            {"client_id": 2, "amount": 2.0},
            {"client_id": None, "amount": 3.0},
        ],
    )
    table = {
        "table": "clients",
        "source": {"type": "landing", "dataset": "clients"},
        "schema": {"columns": {"client_id": "bigint", "amount": "double"}},
        "validate": [{"rule": "not_null", "columns": ["client_id"]}],
        "quality": {
            "metrics": [{"metric": "row_count"}, {"metric": "mean", "column": "amount"}],
            "checks": [{"metric": "row_count", "min": 1}],
        },
        "write": {"mode": "merge", "keys": ["client_id"]},
    }
    file = tmp_path / "clients.yaml"
    file.write_text(yaml.safe_dump(table))
    journal = tmp_path / "clients_journal.yaml"
    journal.write_text(
        yaml.safe_dump(
            {
                "table": "clients_journal",
                "source": {"type": "table", "table": "clients"},
                "journal": {"keys": ["client_id"]},
                "write": {"mode": "journal"},
            }
        )
    )

    checked = _cli(connect_env, "check", str(file), "--against-source")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    first = _cli(connect_env, "run", str(file))
    assert first.returncode == 0, first.stdout + first.stderr
    assert "2 / 0 / 0" in first.stdout
    assert "stages" in first.stderr  # the progress display

    _land(
        landing,
        "clients",
        "2026-01-02",
        "part-0.parquet",
        [{"client_id": 2, "amount": 20.0}, {"client_id": 3, "amount": 3.0}],
    )
    second = _cli(connect_env, "run", str(file), "--no-progress")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "1 / 1 / 0" in second.stdout  # MERGE INTO: one key new, one changed
    third = _cli(connect_env, "run", str(file), "--no-progress")
    assert third.returncode == 0, third.stdout + third.stderr
    assert "no_new_data" in third.stdout

    assert _cli(connect_env, "run", str(journal), "--no-progress").returncode == 0
    history = _cli(connect_env, "history", "clients")
    assert history.returncode == 0, history.stdout + history.stderr
    assert "MERGE" in history.stdout
    assert "CREATE" in history.stdout
    journal_history = _cli(connect_env, "history", "clients_journal")
    assert "CREATE" in journal_history.stdout, journal_history.stdout + journal_history.stderr

    changes = _cli(connect_env, "changes", "clients", "--since", "0")
    assert changes.returncode == 0, changes.stdout + changes.stderr
    assert "update_postimage" in changes.stdout

    quarantined = _cli(connect_env, "quarantine", "clients")
    assert quarantined.returncode == 0, quarantined.stdout + quarantined.stderr
    assert "not_null(client_id)" in quarantined.stdout

    page = tmp_path / "report.html"
    report = _cli(connect_env, "report", "clients", "--output", str(page))
    assert report.returncode == 0, report.stdout + report.stderr
    assert "mean:amount" in page.read_text()
