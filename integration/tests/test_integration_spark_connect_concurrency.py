"""Several thimble-etl processes on the stack's Spark Connect server at once, sharing its warehouse.

Each command runs as a user runs it (``python -m thimble.etl …``), with ``THIMBLE_SPARK__REMOTE`` set;
their tables go to a database of this module's own, in a temporary folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration.tests.connect_sql import connect_sql
from thimble.testing import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROWS = 2_000


def _remote() -> str:
    return os.environ.get("THIMBLE_SPARK__REMOTE") or (
        f"sc://127.0.0.1:{os.environ.get('THIMBLE_STACK_SPARK_PORT') or 15002}"
    )


@pytest.fixture(scope="module")
def remote() -> str:
    """The stack's Spark Connect server, once it answered a query."""
    url = _remote()
    wait_until(
        lambda: connect_sql(url, "SELECT 1 AS one", timeout=60) == [{"one": 1}],
        120,
        interval=1,
        what=f"Spark Connect at {url} (start it with `./dev stack up`)",
    )
    return url


@pytest.fixture(scope="module")
def warehouse(remote: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The environment of this module's commands: the stack's server, a database and folder of their own."""
    database = f"concurrency_{uuid.uuid4().hex[:8]}"
    env = {key: value for key, value in os.environ.items() if not key.startswith("THIMBLE_SPARK__")}
    env |= {
        "THIMBLE_SPARK__REMOTE": remote,
        "THIMBLE_WAREHOUSE__LOCATION": str(tmp_path_factory.mktemp("concurrency-warehouse")),
        "THIMBLE_WAREHOUSE__DATABASE": database,
        "COLUMNS": "200",
    }
    yield env
    connect_sql(remote, f"DROP DATABASE IF EXISTS `{database}` CASCADE")


def _write_day(path: Path, day: int, keys: range) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join(
            json.dumps(
                {
                    "client_id": f"c{i:05}",
                    "segment": ("gold", "silver", "bronze")[(i + day) % 3],
                    "balance": float(i * day),
                    "updated_at": f"2026-01-0{day}T08:00:00",
                }
            )
            + "\n"
            for i in keys
        )
    )


def _config(folder: Path, table: str, source: Path) -> Path:
    config = {
        "table": table,
        "source": {"type": "files", "path": str(source), "format": "json"},
        "schema": {
            "columns": {
                "client_id": "string",
                "segment": "string",
                "balance": "double",
                "updated_at": "string",
            }
        },
        "cleanse": [{"step": "parse_timestamp", "column": "updated_at", "format": "yyyy-MM-dd'T'HH:mm:ss"}],
        "quality": {"metrics": [{"metric": "row_count"}], "checks": [{"metric": "row_count", "min": 1}]},
        "journal": {"keys": ["client_id"], "track": ["segment", "balance"], "order_by": "updated_at"},
        "write": {"mode": "journal"},
    }
    path = folder / f"{table}.json"
    path.write_text(json.dumps(config))
    return path


def _start(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "thimble.etl", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process: subprocess.Popen[str], timeout: float = 900) -> tuple[int, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out + err


def _all_at_once(env: dict[str, str], *commands: list[str]) -> list[tuple[int, str]]:
    started = [_start(env, *command) for command in commands]
    return [_finish(process) for process in started]


def _run(config: Path, run_id: str) -> list[str]:
    return ["run", str(config), "--no-progress", "--run-id", run_id]


def test_two_loads_of_other_tables_and_history_at_once_each_see_the_others_commits(
    warehouse: dict[str, str], tmp_path: Path
) -> None:
    source = tmp_path / "source"
    _write_day(source / "day1.json", 1, range(ROWS))
    configs = {table: _config(tmp_path, table, source) for table in ("alpha", "beta", "gamma")}
    first = _all_at_once(warehouse, _run(configs["gamma"], "gamma-1"))
    assert first[0][0] == 0, first[0][1]

    results = _all_at_once(
        warehouse, _run(configs["alpha"], "alpha-1"), _run(configs["beta"], "beta-1"), ["history", "gamma"]
    )

    for code, output in results:
        assert code == 0, output
    assert "gamma-1" in results[2][1]
    seen = _all_at_once(warehouse, ["history", "alpha"], ["history", "beta"])
    assert [code for code, _ in seen] == [0, 0], seen
    assert "alpha-1" in seen[0][1]
    assert "beta-1" in seen[1][1]


def test_two_loads_of_one_table_at_once_never_commit_from_the_same_base(
    remote: str, warehouse: dict[str, str], tmp_path: Path
) -> None:
    source = tmp_path / "source"
    _write_day(source / "day1.json", 1, range(ROWS))
    config = _config(tmp_path, "delta_conflict", source)
    first = _all_at_once(warehouse, _run(config, "load-1"))
    assert first[0][0] == 0, first[0][1]
    _write_day(source / "day2.json", 2, range(0, ROWS + 500, 2))

    results = _all_at_once(warehouse, _run(config, "load-2a"), _run(config, "load-2b"))

    assert any(code == 0 for code, _ in results), results
    for code, output in results:
        if code != 0:
            assert "Traceback" not in output, output
            assert "concurrent" in output.lower() or "conflict" in output.lower(), output
    table = f"`{warehouse['THIMBLE_WAREHOUSE__DATABASE']}`.delta_conflict"
    history: list[dict[str, Any]] = connect_sql(remote, f"DESCRIBE HISTORY {table}")
    later = [row for row in history if row["version"] > 0]
    assert later, history
    # Every commit was built on the version just before it: no two from the same base.
    assert all(row["readVersion"] == row["version"] - 1 for row in later), later
    doubled = connect_sql(
        remote, f"SELECT client_id FROM {table} WHERE is_current GROUP BY client_id HAVING count(*) > 1"
    )
    assert doubled == []
    changed = len(range(0, ROWS + 500, 2))  # every second key changes and 250 keys are new
    assert connect_sql(remote, f"SELECT count(*) AS n FROM {table}") == [{"n": ROWS + changed}]
