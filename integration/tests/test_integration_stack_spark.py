"""Spark in the stack: a Spark Connect server on a standalone master with two workers, beside the main stack.

One side stack (its own run folder and ports) for the module: ``up --spark-workers 2``. Its Spark Connect
server runs two days of a thimble-etl journal load, which must hold the journal worked out in the test.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from integration._procs import cmdline
from integration._spark import master_state
from integration._testing import Stack, make_stack
from integration.tests.connect_sql import connect_sql
from thimble.testing import free_port_run

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WORKERS = 2


def _output(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


def _spark_stack(run_dir: Path) -> Stack:
    stack = make_stack(run_dir)
    stack.spark = True
    stack.spark_port = free_port_run(25002)
    stack.spark_master_port = free_port_run(27077, WORKERS + 2)
    return stack


@pytest.fixture(scope="module")
def spark_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A side stack whose Spark Connect server runs its work on a standalone master and two workers."""
    stack = _spark_stack(tmp_path_factory.mktemp("spark-stack-run"))
    result = stack.run("up", "--spark-workers", str(WORKERS), timeout=480)
    try:
        if result.returncode != 0:
            pytest.fail(f"`stack.py up --spark-workers {WORKERS}` failed:\n{_output(result)}")
        yield stack
    finally:
        stack.run("down")
        stack.kill_leftovers()


def _remote(stack: Stack) -> str:
    return f"sc://127.0.0.1:{stack.spark_port}"


def _settings_of(stack: Stack) -> Any:
    from integration._settings import StackSettings

    return StackSettings(
        run_dir=stack.run_dir,
        jars_dir=stack.run_dir / "jars",
        kafka_port=stack.kafka_port,
        redis_port=stack.redis_port,
        spark_port=stack.spark_port,
        spark_master_port=stack.spark_master_port,
        spark_workers=WORKERS,
    )


def test_status_shows_the_connect_server_the_master_and_each_worker(spark_stack: Stack) -> None:
    result = spark_stack.run("status")

    assert result.returncode == 0, _output(result)
    pids = spark_stack.pids()
    assert {"spark", "spark-master", "spark-worker-1", "spark-worker-2"} <= set(pids)
    for name, address in [
        ("spark", f"127.0.0.1:{spark_stack.spark_port}"),
        ("spark-master", f"spark://127.0.0.1:{spark_stack.spark_master_port}"),
        ("spark-worker-2", f"127.0.0.1:{spark_stack.spark_master_port + 3}"),
    ]:
        row = next(line for line in result.stdout.splitlines() if f" {name} " in line)
        assert " up " in row, row
        assert str(pids[name]) in row
        assert address in row


def test_every_spark_process_listens_on_loopback_only(spark_stack: Stack) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
        other = probe.getsockname()[0]
    if other.startswith("127."):
        pytest.skip("this machine has no address other than loopback")
    for port in (spark_stack.spark_port, spark_stack.spark_master_port, spark_stack.spark_master_port + 2):
        with socket.socket() as sock:
            sock.settimeout(1)
            assert sock.connect_ex((other, port)) != 0, f"port {port} answers on {other}"


def test_the_connect_server_runs_its_work_on_the_workers(spark_stack: Stack) -> None:
    remote = _remote(spark_stack)
    master = connect_sql(remote, "SET spark.master")
    total = connect_sql(remote, "SELECT sum(id) AS total FROM range(0, 400, 1, 4)")

    assert master[0]["value"] == f"spark://127.0.0.1:{spark_stack.spark_master_port}"
    assert total == [{"total": 79800}]
    state = master_state(_settings_of(spark_stack))
    assert state is not None
    apps = [app for app in state["activeapps"] if app["name"] == "thimble-connect"]
    assert len(apps) == 1
    assert apps[0]["cores"] == WORKERS
    # Each worker launched an executor of the server's application (its folder holds the executor's log).
    for number in range(1, WORKERS + 1):
        work_dir = spark_stack.run_dir / "data" / "spark" / f"spark-worker-{number}"
        assert list(work_dir.glob(f"{apps[0]['id']}/*/stderr")), f"no executor ran on spark-worker-{number}"


def test_logs_spark_shows_the_server_the_master_and_the_workers(spark_stack: Stack) -> None:
    result = spark_stack.run("logs", "spark", "-n", "200")

    assert result.returncode == 0, _output(result)
    for name in ("spark-master", "spark-worker-1", "spark-worker-2", "spark"):
        assert f"{name}: {spark_stack.run_dir / 'logs' / (name + '.log')}" in result.stdout
    assert "Spark Connect server started at: 127.0.0.1" in result.stdout


def test_up_again_is_a_no_op_and_another_worker_count_is_refused(spark_stack: Stack) -> None:
    before = spark_stack.pids()

    again = spark_stack.run("up")
    other = spark_stack.run("up", "--spark-workers", "1")

    assert again.returncode == 0, _output(again)
    assert spark_stack.pids() == before
    assert other.returncode == 1
    assert "runs Spark with 2 worker(s), not 1" in _output(other)
    assert "down spark" in _output(other)
    assert spark_stack.pids() == before


# -- the same thimble-etl load on two workers and in process ---------------------------------------


def _day(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def _table_config(path: Path, table: str, source: Path) -> Path:
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
        "validate": [{"rule": "range", "column": "balance", "min": 0}],
        "quality": {"metrics": [{"metric": "row_count"}], "checks": [{"metric": "row_count", "min": 1}]},
        "journal": {"keys": ["client_id"], "track": ["segment", "balance"], "order_by": "updated_at"},
        "write": {"mode": "journal"},
    }
    path.write_text(json.dumps(config))
    return path


def _etl(*args: str, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "thimble.etl", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _clean_env(**values: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("THIMBLE_SPARK__")}
    return {**env, "COLUMNS": "200", **values}


DAY1, DAY2 = "2026-01-01T08:00:00", "2026-01-02T08:00:00"


def _expected_journal() -> list[tuple[Any, ...]]:
    """The journal of the two days, worked out here: (client, segment, balance, updated_at, valid_from,
    valid_to, is_current), times in epoch seconds. Every third client of day 1 changes on day 2; day 2
    adds the clients from 300 on."""
    day1, day2 = (int(datetime.fromisoformat(t).replace(tzinfo=UTC).timestamp()) for t in (DAY1, DAY2))
    rows = []
    for i in range(300):
        changed = i % 3 == 0
        segment = ["gold", "silver"][i % 2]
        rows.append((f"c{i:03}", segment, i * 1.5, day1, day1, day2 if changed else None, not changed))
    rows += [(f"c{i:03}", "bronze", i * 2.0, day2, day2, None, True) for i in range(0, 400, 3)]
    return sorted(rows, key=repr)


def test_a_table_loaded_on_two_workers_is_the_journal_of_its_two_days(
    spark_stack: Stack, tmp_path: Path
) -> None:
    days = tmp_path / "days"
    days.mkdir()
    _day(
        days / "day1.json",
        [
            {"client_id": f"c{i:03}", "segment": ["gold", "silver"][i % 2], "balance": i * 1.5, "updated_at": DAY1}
            for i in range(300)
        ],
    )  # fmt: skip
    # The second day changes a third of the clients and adds new ones: the journal closes and opens rows.
    _day(
        days / "day2.json",
        [
            {"client_id": f"c{i:03}", "segment": "bronze", "balance": i * 2.0, "updated_at": DAY2}
            for i in range(0, 400, 3)
        ],
    )  # fmt: skip
    table = f"smoke_{uuid.uuid4().hex[:8]}"
    source = tmp_path / "source"
    source.mkdir()
    config = _table_config(tmp_path / "table.json", table, source)
    database = f"smoke_{uuid.uuid4().hex[:8]}"
    env = _clean_env(
        THIMBLE_SPARK__REMOTE=_remote(spark_stack),
        THIMBLE_WAREHOUSE__LOCATION=str(tmp_path / "cluster"),
        THIMBLE_WAREHOUSE__DATABASE=database,
    )

    for day in ("day1", "day2"):
        shutil.copy(days / f"{day}.json", source)
        result = _etl("run", str(config), "--no-progress", env=env)
        assert result.returncode == 0, _output(result)

    path = tmp_path / "cluster" / f"{database}.db" / table
    found = connect_sql(
        _remote(spark_stack),
        "SELECT client_id, segment, balance, unix_seconds(updated_at) AS updated_at, "
        "unix_seconds(valid_from) AS valid_from, unix_seconds(valid_to) AS valid_to, is_current, row_hash "
        f"FROM delta.`{path}`",
    )
    assert sorted((tuple(row.values())[:-1] for row in found), key=repr) == _expected_journal()
    versions: dict[str, set[str]] = {}
    for row in found:
        versions.setdefault(row["client_id"], set()).add(row["row_hash"])
    assert all(len(hashes) == 1 + (int(client[1:]) % 3 == 0 and int(client[1:]) < 300)
               for client, hashes in versions.items())  # fmt: skip


def test_down_spark_stops_only_sparks_services(spark_stack: Stack) -> None:
    before = spark_stack.pids()

    result = spark_stack.run("down", "spark")

    assert result.returncode == 0, _output(result)
    after = spark_stack.pids()
    assert set(after) == {"kafka", "redis"}
    assert after == {name: before[name] for name in ("kafka", "redis")}
    for name in ("spark", "spark-master", "spark-worker-1", "spark-worker-2"):
        assert cmdline(before[name]) is None, f"{name} (pid {before[name]}) still runs"


def test_a_taken_spark_port_is_named_and_nothing_starts(tmp_path: Path) -> None:
    stack = _spark_stack(tmp_path)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", stack.spark_port))
        holder.listen()

        result = stack.run("up", timeout=240)

    assert result.returncode == 1
    assert f"port {stack.spark_port} is taken by pid {os.getpid()}" in _output(result)
    assert "THIMBLE_STACK_SPARK_PORT" in _output(result)
    assert stack.pids() == {}
