"""Spark in process, one command after another on one metastore, as a user runs ``run`` then ``history``."""

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WRITE = """
from thimble.common.config import load_settings
from thimble.common.spark import build_spark_session

session = build_spark_session()
table = f"{load_settings().warehouse.database}.numbers"
session.sql(f"CREATE TABLE {table} (n INT) USING delta")
session.sql(f"INSERT INTO {table} VALUES (1), (2)")
"""

READ = """
from thimble.common.config import load_settings
from thimble.common.spark import build_spark_session

print(build_spark_session().table(f"{load_settings().warehouse.database}.numbers").count())
"""


def test_a_command_ended_leaves_the_metastore_free_for_the_next(tmp_path: Path) -> None:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("THIMBLE_SPARK__", "THIMBLE_WAREHOUSE__", "SPARK_REMOTE", "SPARK_CONNECT"))
    }
    env |= {
        "THIMBLE_WAREHOUSE__METASTORE": str(tmp_path / "metastore"),
        "THIMBLE_WAREHOUSE__LOCATION": str(tmp_path / "tables"),
    }

    def command(code: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, check=False
        )

    written = command(WRITE)
    assert written.returncode == 0, written.stderr[-2000:]
    # The process has exited: its JVM, which held Derby's lock, must be gone with it.
    with (tmp_path / "metastore" / "metastore_db" / "dbex.lck").open("rb+") as lock:
        fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.lockf(lock, fcntl.LOCK_UN)
    read = command(READ)
    assert read.returncode == 0, read.stderr[-2000:]
    assert read.stdout.strip().splitlines()[-1] == "2"


def test_spark_in_process_starts_in_a_child_of_a_spark_connect_process(tmp_path: Path) -> None:
    """pyspark marks a process that opened a Spark Connect session, and its children inherit the mark."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("THIMBLE_SPARK__", "THIMBLE_WAREHOUSE__", "SPARK_REMOTE"))
    }
    env |= {
        "SPARK_CONNECT_MODE_ENABLED": "1",
        "THIMBLE_WAREHOUSE__METASTORE": str(tmp_path / "metastore"),
        "THIMBLE_WAREHOUSE__LOCATION": str(tmp_path / "tables"),
    }

    written = subprocess.run(
        [sys.executable, "-c", WRITE + READ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert written.returncode == 0, written.stderr[-2000:]
    assert written.stdout.strip().splitlines()[-1] == "2"
