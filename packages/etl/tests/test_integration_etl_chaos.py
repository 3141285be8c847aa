"""Chaos: ``kill -9`` of ``thimble-etl run`` at chosen moments, then the same run again; and two runs at once.

Each test drives the real CLI in processes of its own (``python -m thimble.etl run``) as clients of the
local stack's Spark Connect server, kills one with SIGKILL at a moment seen from outside (a new commit in
a table's Delta log), re-runs it at once (the server may still be running the killed client's query),
waits until the tables are quiet, and compares the tables, read with delta-rs (no Spark), with a
plain-Python reference built from the README's promises alone:

- append (incremental landing source): every row that passed validation, once;
- merge: the last row of each key;
- journal (``order_by``, ``deletes: close``): each key's versions, a new one only when the tracked values
  change, closed at the next one's ``valid_from`` or at the batch time when the key leaves the snapshot.

Also checked: every bad row is in quarantine once, every committed version of the table has its metrics
rows (``committed = true``, that run id and version), one commit per run.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from thimble.testing import port_free, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STACK_CONNECT = f"sc://127.0.0.1:{os.environ.get('THIMBLE_STACK_SPARK_PORT', '15002')}"
DATASET = "clients"
TABLE = "chaos"
DAY = [dt.datetime(2026, 1, 1) + dt.timedelta(days=i) for i in range(10)]
Row = dict[str, Any]


# ---------------------------------------------------------------------------------------------- the job


class Job:
    """One table config, its landing area and warehouse, run as CLI processes over Spark Connect."""

    def __init__(self, root: Path, mode: str, remote: str | None = STACK_CONNECT) -> None:
        self.root = root
        self.mode = mode
        self.database = f"chaos_{uuid.uuid4().hex[:10]}"
        self.location = root / "tables"
        self.landing = root / "landing"
        settings = {
            "warehouse": {
                "location": str(self.location),
                "landing": str(self.landing),
                "metastore": str(root / "metastore"),
                "database": self.database,
            },
            "spark": {"remote": remote, "shuffle_partitions": 2}
            if remote
            else {"shuffle_partitions": 2, "driver_memory": "1g"},  # Spark in the command's process
            "metrics": {"textfile_dir": str(root / "prom")},
        }
        (root / "thimble.yaml").write_text(yaml.safe_dump(settings))
        table: dict[str, Any] = {
            "table": TABLE,
            "source": {"type": "landing", "dataset": DATASET, "incremental": True},
            "schema": {
                "columns": {
                    "client_id": "string",
                    "segment": "string",
                    "balance": "double",
                    "updated_at": "timestamp",
                }
            },
            "validate": [{"rule": "range", "column": "balance", "min": 0}],
            "quality": {"metrics": [{"metric": "row_count"}], "checks": [{"metric": "row_count", "min": 1}]},
            "write": {"mode": mode},
        }
        if mode == "merge":
            table["write"]["keys"] = ["client_id"]
        if mode == "journal":
            table["journal"] = {
                "keys": ["client_id"],
                "track": ["segment", "balance"],
                "order_by": "updated_at",
                "deletes": "close",
                "max_close_share": 1.0,
            }
        self.config = root / "table.yaml"
        self.config.write_text(yaml.safe_dump(table))
        env = {k: v for k, v in os.environ.items() if not k.startswith("THIMBLE_SPARK__")}
        self.env = env | {"THIMBLE_CONFIG": str(root / "thimble.yaml"), "COLUMNS": "200"}
        self.runs = 0

    # -- inputs

    def land(self, day: int, rows: list[Row]) -> None:
        """Land one Parquet file of ``rows`` under ``date=<day>``, atomically (a '.' name, then renamed)."""
        folder = self.landing / DATASET / f"date={DAY[day]:%Y-%m-%d}"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"part-{uuid.uuid4().hex[:8]}.parquet"
        frame = pd.DataFrame(rows, columns=["client_id", "segment", "balance", "updated_at"])
        frame["updated_at"] = pd.to_datetime(frame["updated_at"]).astype("datetime64[us]")
        frame.to_parquet(folder / f".{name}")
        (folder / f".{name}").rename(folder / name)

    # -- processes

    def start(self) -> subprocess.Popen[str]:
        self.runs += 1
        out = open(self.root / f"run-{self.runs}.log", "w")  # noqa: SIM115 - closed with the process
        return subprocess.Popen(
            [sys.executable, "-m", "thimble.etl", "run", str(self.config), "--no-progress"],
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    def output(self, run: int) -> str:
        return (self.root / f"run-{run}.log").read_text()

    def run(self, timeout: float = 300) -> tuple[int, str]:
        proc = self.start()
        rc = proc.wait(timeout)
        return rc, self.output(self.runs)

    # -- the tables, seen from outside

    def path(self, name: str) -> Path:
        return self.location / f"{self.database}.db" / name

    def version(self, name: str) -> int:
        log = self.path(name) / "_delta_log"
        if not log.is_dir():
            return -1
        versions = [int(p.stem) for p in log.glob("*.json") if p.stem.isdigit()]
        return max(versions, default=-1)

    def commits(self, name: str) -> list[dict[str, Any]]:
        """Every commit's commitInfo, oldest first."""
        found = []
        for p in sorted((self.path(name) / "_delta_log").glob("*.json")):
            for line in p.read_text().splitlines():
                action = json.loads(line)
                if "commitInfo" in action:
                    info = action["commitInfo"]
                    info["version"] = int(p.stem)
                    found.append(info)
        return found

    def thimble_commits(self) -> list[dict[str, Any]]:
        out = []
        for info in self.commits(TABLE):
            meta = json.loads(info.get("userMetadata") or "{}").get("thimble")
            if meta:
                out.append({"version": info["version"], "operation": info["operation"], **meta})
        return out

    def read(self, name: str) -> pd.DataFrame:
        from deltalake import DeltaTable

        if self.version(name) < 0:
            return pd.DataFrame()
        return DeltaTable(str(self.path(name))).to_pandas()

    def files(self) -> int:
        """Files under the data table's folder: a query still writing adds some."""
        root = self.path(TABLE)
        return sum(1 for _ in root.rglob("*")) if root.exists() else 0

    def wait_quiet(self, quiet: float = 20.0, timeout: float = 240.0) -> None:
        """Wait until no file appears under the four tables for ``quiet`` seconds (an orphaned query of a
        killed client, still running on the server, would add some)."""

        def snapshot() -> tuple[int, ...]:
            return tuple(
                sum(1 for _ in self.path(n).rglob("*")) if self.path(n).exists() else 0
                for n in (TABLE, f"{TABLE}_quarantine", f"{TABLE}_quarantine_staged", "thimble_quality")
            )

        last, since = snapshot(), time.monotonic()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = snapshot()
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
        pytest.fail("the tables never went quiet")


def kill_when(proc: subprocess.Popen[str], condition: Any, timeout: float = 240.0) -> bool:
    """SIGKILL ``proc`` (and its process group) as soon as ``condition()`` holds; False if it ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.002)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    pytest.fail("the moment to kill never came")


# ----------------------------------------------------------------------------------------- the inputs


def _row(key: str, segment: str, balance: float, day: int) -> Row:
    return {"client_id": key, "segment": segment, "balance": balance, "updated_at": DAY[day]}


def loads(mode: str, seed: int = 7) -> list[tuple[int, list[Row]]]:
    """Three loads (day, rows): history, then changes, deletions, unchanged and new keys, returning keys.

    Each load holds two bad rows (negative balance, keys of their own) so that each run quarantines."""
    rng = random.Random(seed)
    seg = ["gold", "silver", "bronze"]

    def value() -> tuple[str, float]:
        return rng.choice(seg), float(rng.randint(0, 1000))

    current: dict[str, tuple[str, float]] = {}
    out: list[tuple[int, list[Row]]] = []
    # load 0: day 1 (and for the journal, some keys' earlier version on day 0 in the same batch)
    rows: list[Row] = []
    for i in range(20):
        key = f"c{i:02d}"
        if mode == "journal" and i < 5:
            s, b = value()
            rows.append(_row(key, s, b, 0))
        current[key] = value()
        rows.append(_row(key, *current[key], 1))
    rows += [_row("bad-0a", "gold", -1.0, 1), _row("bad-0b", "gold", -2.0, 1)]
    out.append((1, rows))
    # load 1 (day 2): c00-c04 unchanged, c05-c09 changed, c10-c14 unchanged, c15-c19 gone, n00-n04 new
    rows = []
    for i in range(15):
        key = f"c{i:02d}"
        if 5 <= i < 10:
            current[key] = (current[key][0], current[key][1] + 1.0)
        rows.append(_row(key, *current[key], 2))
    for i in range(5):
        current[f"n{i:02d}"] = value()
        rows.append(_row(f"n{i:02d}", *current[f"n{i:02d}"], 2))
    rows += [_row("bad-1a", "gold", -1.0, 2), _row("bad-1b", "gold", -2.0, 2)]
    out.append((2, rows))
    # load 2 (day 3): c15, c16 come back (one with its old values), c00 changes segment, c01-c03 gone
    rows = []
    for key in [k for k in current if k not in {"c01", "c02", "c03", "c17", "c18", "c19"}]:
        if key == "c00":
            current[key] = ("platinum", current[key][1])
        rows.append(_row(key, *current[key], 3))
    rows += [_row("bad-2a", "gold", -1.0, 3), _row("bad-2b", "gold", -2.0, 3)]
    out.append((3, rows))
    return out


# -------------------------------------------------------------------------------------- the reference


def passes(row: Row) -> bool:
    return row["balance"] is not None and row["balance"] >= 0


def passing(rows: list[Row]) -> list[Row]:
    return [r for r in rows if passes(r)]


def reference(mode: str, batches: list[list[Row]]) -> Counter[tuple[Any, ...]]:
    """What the table must hold after ``batches`` (from the README), as a multiset of tuples."""
    if mode == "append":
        return Counter(
            (r["client_id"], r["segment"], r["balance"], r["updated_at"]) for b in batches for r in passing(b)
        )
    if mode == "merge":
        table: dict[str, Row] = {}
        for b in batches:
            for r in passing(b):
                table[r["client_id"]] = r
        return Counter((r["client_id"], r["segment"], r["balance"], r["updated_at"]) for r in table.values())
    # journal: versions [key, segment, balance, updated_at, valid_from, valid_to]
    versions: dict[str, list[list[Any]]] = {}
    for b in batches:
        good = passing(b)
        failed_keys = {r["client_id"] for r in b if not passes(r)}
        for r in sorted(good, key=lambda r: r["updated_at"]):
            history = versions.setdefault(r["client_id"], [])
            cur = history[-1] if history and history[-1][5] is None else None
            if cur is not None and (cur[1], cur[2]) == (r["segment"], r["balance"]):
                continue  # unchanged: no new version
            if cur is not None:
                assert r["updated_at"] > cur[4], "the inputs hold no late rows"
                cur[5] = r["updated_at"]
            history.append(
                [r["client_id"], r["segment"], r["balance"], r["updated_at"], r["updated_at"], None]
            )
        batch_time = max(r["updated_at"] for r in good)
        present = {r["client_id"] for r in good} | failed_keys
        for key, history in versions.items():
            cur = history[-1]
            if cur[5] is None and key not in present and cur[4] < batch_time:
                cur[5] = batch_time
    return Counter(
        (v[0], v[1], v[2], v[3], v[4], v[5], v[5] is None) for history in versions.values() for v in history
    )


def _ts(value: Any) -> Any:
    if value is None or pd.isna(value):
        return None
    return pd.Timestamp(value).tz_convert(None).to_pydatetime() if pd.Timestamp(value).tzinfo else value


def actual(job: Job) -> Counter[tuple[Any, ...]]:
    frame = job.read(TABLE)
    out: Counter[tuple[Any, ...]] = Counter()
    for r in frame.to_dict("records"):
        base: tuple[Any, ...] = (r["client_id"], r["segment"], float(r["balance"]), _ts(r["updated_at"]))
        if job.mode == "journal":
            base += (_ts(r["valid_from"]), _ts(r["valid_to"]), bool(r["is_current"]))
        out[base] += 1
    return out


def diff(want: Counter[tuple[Any, ...]], got: Counter[tuple[Any, ...]]) -> str:
    missing, extra = want - got, got - want
    return f"missing {sorted(missing.elements())[:10]} ({sum(missing.values())}); extra {sorted(extra.elements())[:10]} ({sum(extra.values())})"


def quarantine_counts(job: Job) -> Counter[str]:
    frame = job.read(f"{TABLE}_quarantine")
    if frame.empty:
        return Counter()
    return Counter(json.loads(r)["client_id"] for r in frame["record"])


def metrics_problems(job: Job) -> list[str]:
    """Committed versions of the table whose run has no metrics rows with committed = true."""
    metrics = job.read("thimble_quality")
    problems = []
    for commit in job.thimble_commits():
        rows = (
            metrics[(metrics["run_id"] == commit["run_id"]) & (metrics["version"] == commit["version"])]
            if not metrics.empty
            else metrics
        )
        if rows.empty or not rows["committed"].all():
            problems.append(f"version {commit['version']} (run {commit['run_id']}) has no metrics rows")
    return problems


def one_commit_per_run(job: Job) -> list[str]:
    seen = Counter(c["run_id"] for c in job.thimble_commits())
    return [f"run {run} made {n} commits" for run, n in seen.items() if n > 1]


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def connect_url() -> str:
    host, port = STACK_CONNECT.removeprefix("sc://").split(":")
    wait_until(lambda: not port_free(int(port), host), 60, what=f"Spark Connect at {STACK_CONNECT}")
    return STACK_CONNECT


def first_load_done_second_landed(tmp_path: Path, mode: str, connect_url: str) -> tuple[Job, list[list[Row]]]:
    """A job whose first load ran and whose second is landed, not yet run; the two loads' rows."""
    job = Job(tmp_path, mode, connect_url)
    data = loads(mode)
    job.land(*data[0])
    rc, out = job.run()
    assert rc == 0, out
    job.land(*data[1])
    return job, [data[0][1], data[1][1]]


def check_all(job: Job, batches: list[list[Row]]) -> list[str]:
    """Every broken promise, as sentences."""
    problems = []
    want, got = reference(job.mode, batches), actual(job)
    if want != got:
        problems.append(f"{job.mode} table differs from the reference: {diff(want, got)}")
    bad = [r["client_id"] for b in batches for r in b if not passes(r)]
    held = quarantine_counts(job)
    lost = [k for k in bad if held[k] == 0]
    if lost:
        problems.append(f"bad rows never quarantined: {lost}")
    twice = {k: held[k] for k in bad if held[k] > 1}
    if twice:
        problems.append(f"bad rows quarantined more than once: {twice}")
    problems += one_commit_per_run(job)
    problems += metrics_problems(job)
    return problems


# ------------------------------------------------------------------------------------- kill and re-run

MOMENTS: dict[str, Callable[[Job, dict[str, int]], bool]] = {
    # the run's quarantine rows are staged: validation is done, the data write comes next
    "at_quarantine_staged": lambda job, v: job.version(f"{TABLE}_quarantine_staged") > v["staged"],
    # the data commit is in the log: the metrics (and the run's end) are still to come
    "after_data_commit": lambda job, v: job.version(TABLE) > v["table"],
    # the data write has started: a part file of this run in the table's folder
    "during_data_write": lambda job, v: job.files() > v["files"],
}


def kill_then_rerun(job: Job, moment: str, delay: float = 0.0) -> dict[str, Any]:
    before = {
        "staged": job.version(f"{TABLE}_quarantine_staged"),
        "table": job.version(TABLE),
        "files": job.files(),
    }
    proc = job.start()
    condition = MOMENTS[moment]
    fired_at: list[float] = []

    def when() -> bool:
        if not fired_at and condition(job, before):
            fired_at.append(time.monotonic())
        return bool(fired_at) and time.monotonic() - fired_at[0] >= delay

    killed = kill_when(proc, when)
    state: dict[str, Any] = {
        "killed": killed,
        "killed_at_ms": int(time.time() * 1000),
        "table_version_at_kill": job.version(TABLE),
        "table_version_before": before["table"],
    }
    rc, out = job.run()  # at once: the server may still run the killed client's query
    state["rerun_rc"], state["rerun_output"] = rc, out
    job.wait_quiet()
    state["table_version_after"] = job.version(TABLE)
    # commits that landed after the client was killed (its query went on running on the server)
    state["commits_after_kill"] = [
        (
            c["version"],
            c["operation"],
            c["timestamp"] - state["killed_at_ms"],
            json.loads(c.get("userMetadata") or "{}").get("thimble", {}).get("run_id"),
        )
        for c in job.commits(TABLE)
        if c["timestamp"] > state["killed_at_ms"]
    ]
    return state


# (mode, moment, whether the tables are checked after one more run: the Spark Connect server may commit
# the killed client's write after the re-run ended, and that commit's metrics and quarantine rows are then
# the next run's to finish)
CASES = [
    ("journal", "after_data_commit", False),  # the re-run finds no new data and finishes the killed run
    ("append", "at_quarantine_staged", True),  # its rows staged, not yet published: published once
    ("append", "during_data_write", True),
]


@pytest.mark.parametrize(("mode", "moment", "next_run"), CASES)
def test_a_run_killed_then_run_again_leaves_the_tables_of_an_uninterrupted_run(
    tmp_path: Path, connect_url: str, mode: str, moment: str, next_run: bool
) -> None:
    job, batches = first_load_done_second_landed(tmp_path, mode, connect_url)

    state = kill_then_rerun(job, moment)

    assert state["killed"], "the run ended before the moment came"
    assert state["rerun_rc"] == 0, state["rerun_output"][-3000:]
    if next_run:
        rc, out = job.run()
        assert rc == 0, out[-3000:]
    problems = check_all(job, batches)
    assert not problems, (problems, {k: v for k, v in state.items() if k != "rerun_output"})


# ---------------------------------------------------------------------------------- two runs at once


def test_two_runs_of_one_job_at_once_do_not_duplicate_or_corrupt(tmp_path: Path, connect_url: str) -> None:
    mode = "append"  # a journal's concurrent MERGEs conflict in Delta itself
    job, batches = first_load_done_second_landed(tmp_path, mode, connect_url)

    first, second = job.start(), job.start()
    codes = (first.wait(300), second.wait(300))
    outputs = (job.output(job.runs - 1), job.output(job.runs))
    job.wait_quiet(quiet=5)

    # The README promises nothing about concurrency; at the least: no lost or duplicated rows, no
    # corrupt history, and a run that could not commit says so (exit 2), never a silent double load.
    problems = check_all(job, batches)
    assert not problems, (problems, codes, [o[-1500:] for o in outputs])
