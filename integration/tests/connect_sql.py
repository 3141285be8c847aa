"""Run SQL through a Spark Connect client in a process of its own.

A Python process holds one kind of Spark session: once it has a Connect client, pyspark builds every
expression for Connect. Tests that check a Connect server from a pytest process which may also hold an
in-process session (the ``spark`` fixture) ask this helper instead.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

_CLIENT = """
import json, sys
from pyspark.sql import SparkSession
session = SparkSession.builder.remote(sys.argv[1]).getOrCreate()
rows = [row.asDict(recursive=True) for row in session.sql(sys.argv[2]).collect()]
session.stop()
print(json.dumps(rows, default=str))
"""


def connect_sql(remote: str, statement: str, timeout: float = 240) -> list[dict[str, Any]]:
    """The rows of ``statement`` as the Spark Connect server at ``remote`` returns them (values JSON-typed)."""
    result = subprocess.run(
        [sys.executable, "-c", _CLIENT, remote, statement],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"{statement!r} failed on {remote}:\n{result.stderr[-3000:]}")
    rows: list[dict[str, Any]] = json.loads(result.stdout.strip().splitlines()[-1])
    return rows
