"""The command line as a user meets it, in a fresh process in New York's time zone.

One process runs the CLI on each bad input (bad settings variables, missing jars, a SQL cast that fails
in Spark), then a good journal run whose timestamps must be UTC. Each bad input must end in one clear
line on stderr naming the user's file, field or variable: no traceback, no JVM output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from thimble.common.spark import spark_jars_dir

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MARK = "=== next case ==="

SCRIPT = """
import json, os, sys
from thimble.etl.cli import app

def cli(case, args, env=None):
    saved = dict(os.environ)
    os.environ.update(env or {})
    try:
        app(args, prog_name="thimble-etl")
        code = 0
    except SystemExit as exc:
        code = exc.code
    finally:
        os.environ.clear()
        os.environ.update(saved)
    sys.stdout.flush()
    sys.stderr.write(MARK + "\\n")
    sys.stderr.flush()
    return case, code

cases = json.loads(sys.argv[1])
codes = dict(cli(case["name"], case["args"], case.get("env")) for case in cases)

from pyspark.sql import SparkSession
from thimble.etl import history
spark = SparkSession.getActiveSession()
table, quarantine, metrics = sys.argv[2:5]
def epochs(name, column):
    return [r[0] / 1e6 for r in spark.table(name).selectExpr(f"unix_micros({column})").collect()]
latest = history(table, spark=spark)[0].timestamp
print("RESULT " + json.dumps({
    "codes": codes,
    "valid_from": epochs(table, "valid_from"),
    "quarantined_at": epochs(quarantine, "quarantined_at"),
    "run_at": epochs(metrics, "run_at"),
    "history": latest.isoformat(),
}))
""".replace("MARK", repr(MARK))


def _yaml(path: Path, data: object) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.mark.timeout(900)  # two Spark starts in one process: about a minute on an idle machine
def test_user_errors_are_one_line_and_times_are_utc_in_any_zone(tmp_path: Path) -> None:
    source = tmp_path / "clients.json"
    source.write_text(
        "".join(json.dumps({"client_id": f"c{i}", "amount": str(i)}) + "\n" for i in range(3))
        + json.dumps({"client_id": "c9", "amount": "lots"})
        + "\n"
    )
    settings = _yaml(
        tmp_path / "thimble.yaml",
        {
            "warehouse": {
                "location": str(tmp_path / "tables"),
                "landing": str(tmp_path / "landing"),
                "metastore": str(tmp_path / "metastore"),
                "database": "tz",
            },
            "spark": {"shuffle_partitions": 2, "driver_memory": "1g"},
        },
    )
    files_source = {"type": "files", "path": str(source), "format": "json"}
    bad_cast = _yaml(
        tmp_path / "bad_cast.yaml",
        {
            "table": "bad_cast",
            "source": files_source,
            "cleanse": [{"step": "sql", "column": "amount_int", "expression": "cast(amount as int) + 1"}],
            "write": {"mode": "append"},
        },
    )
    good = _yaml(
        tmp_path / "clients.yaml",
        {
            "table": "clients",
            "source": files_source,
            "validate": [{"rule": "regex", "column": "amount", "pattern": r"^\p{Digit}+$"}],
            "quality": {"metrics": [{"metric": "row_count"}]},
            "journal": {"keys": ["client_id"]},
            "write": {"mode": "journal"},
        },
    )
    jar_folder = tmp_path / "not-a-jar.jar"
    jar_folder.mkdir()
    run = ["run", "--config", settings, "--no-progress"]
    cases = [
        {"name": "jars not json", "args": [*run, good], "env": {"THIMBLE_SPARK__JARS": "/opt/a.jar,/opt/b.jar"}},
        {"name": "jar missing", "args": [*run, good], "env": {"THIMBLE_SPARK__JARS": '["/opt/none/delta.jar"]'}},
        {"name": "jar is a folder", "args": [*run, good], "env": {"THIMBLE_SPARK__JARS": json.dumps([str(jar_folder)])}},
        {"name": "bad cast", "args": [*run, bad_cast]},
        {"name": "good", "args": [*run, good]},
    ]  # fmt: skip
    env = {
        **os.environ,
        "TZ": "America/New_York",
        "COLUMNS": "200",
        "THIMBLE_STACK_JARS_DIR": str(spark_jars_dir().parent),
    }
    env.pop("THIMBLE_CONFIG", None)
    for name in ("THIMBLE_SPARK__REMOTE", "SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED"):
        env.pop(name, None)  # the jars are those of a session in process
    started = time.time()

    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(cases), "tz.clients", "tz.clients_quarantine", "tz.thimble_quality"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=840, check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    assert result["codes"] == {
        "jars not json": 2,
        "jar missing": 2,
        "jar is a folder": 2,
        "bad cast": 2,
        "good": 0,
    }
    errors = dict(zip([c["name"] for c in cases], done.stderr.split(MARK + "\n"), strict=False))
    noise = (
        "Traceback",
        "at org.apache",
        '.py"',
        "thimble/etl/",
        "WARNING",
        "ERROR",
        "SQLQueryContextLogger",
    )
    for name, stderr in errors.items():
        assert [word for word in noise if word in stderr] == [], (name, stderr)
    assert errors["jars not json"].splitlines() == [
        "error: Invalid configuration:",
        '  THIMBLE_SPARK__JARS: not valid JSON (Expecting value); write a list as \'["a", "b"]\' and a '
        'mapping as \'{"key": "value"}\'',
    ]
    assert errors["jar missing"].splitlines()[1:] == [
        "  THIMBLE_SPARK__JARS: no such jar file: /opt/none/delta.jar"
    ]
    assert errors["jar is a folder"].splitlines()[1:] == [
        f"  THIMBLE_SPARK__JARS: no such jar file: {jar_folder}"
    ]
    cast_error = errors["bad cast"].splitlines()
    assert len(cast_error) == 1, cast_error
    assert cast_error[0].startswith(f"error: {bad_cast}: cleanse[0].expression: tz.bad_cast: Spark failed")
    assert (
        'CAST_INVALID_INPUT: The value \'lots\' of the type "STRING" cannot be cast to "INT"' in cast_error[0]
    )

    # Every time the run recorded is now, in UTC: not shifted by New York's offset.
    now = time.time()
    for name in ("valid_from", "quarantined_at", "run_at"):
        assert result[name], name
        for at in result[name]:
            assert started - 60 <= at <= now + 60, (name, at - now)
    latest = result["history"]
    assert latest.endswith("+00:00")
    from datetime import datetime

    assert started - 60 <= datetime.fromisoformat(latest).timestamp() <= now + 60
