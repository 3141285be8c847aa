"""The warm-up a new Spark Connect server gets: the stack's kind of work, leaving nothing behind."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from integration._settings import REPO_ROOT
from integration.tests.connect_sql import connect_sql

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_warm_up_loads_two_days_of_a_journal_and_drops_its_database(tmp_path: Path) -> None:
    remote = os.environ.get("THIMBLE_SPARK__REMOTE") or (
        f"sc://127.0.0.1:{os.environ.get('THIMBLE_STACK_SPARK_PORT') or 15002}"
    )
    database = f"warmup_{uuid.uuid4().hex[:8]}"
    folder = tmp_path / "warmup"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("THIMBLE_")}

    result = subprocess.run(
        [sys.executable, "-m", "integration._spark_warmup", remote, str(folder), database],
        cwd=REPO_ROOT,
        env={**environment, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "day 1: committed" in result.stdout
    assert "day 2: committed" in result.stdout
    assert f"warm-up of {remote} done" in result.stdout
    assert connect_sql(remote, f"SHOW DATABASES LIKE '{database}'") == []
    assert not folder.exists()


def test_the_warm_up_of_a_server_that_is_not_there_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = subprocess.run(
        [sys.executable, "-m", "integration._spark_warmup", f"sc://127.0.0.1:{port}", str(tmp_path / "w")],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 1
    assert result.stdout.startswith(f"warm-up of sc://127.0.0.1:{port} stopped: ")
    assert len(result.stdout.strip().splitlines()) == 1, result.stdout
