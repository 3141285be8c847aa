"""``python -m integration._spark_warmup URL FOLDER [DATABASE]``: warm a Spark Connect server that has just started.

A new server's JVM loads and compiles what a job needs on its first jobs, which made the first journal
load after ``./dev stack up`` several times slower than the next. This runs the same kind of work once,
in the background, on a few hundred rows: two days of a journal table with validation and quality
metrics, then its history. It works in a database of its own (``thimble_warmup`` unless named, in
``FOLDER``) and drops it at the end; it gives up as soon as the server goes away.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, cast

DEFAULT_DATABASE = "thimble_warmup"
ROWS = 300


def _write_day(folder: Path, day: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = (
        json.dumps({"id": f"c{i}", "value": i * day, "at": f"2026-01-0{day}T00:00:00"}) + "\n"
        for i in range(ROWS - 20 * day)
    )
    (folder / "rows.json").write_text("".join(lines))


def warm_up(url: str, folder: Path, database: str = DEFAULT_DATABASE) -> None:
    from thimble.common.config import load_settings
    from thimble.common.spark import build_spark_session
    from thimble.etl import EtlSettings, history, parse_table_config, run_table

    shutil.rmtree(folder, ignore_errors=True)
    settings = EtlSettings(
        **load_settings(
            overrides={
                "spark": {"remote": url},
                "warehouse": {"database": database, "location": str(folder / "tables")},
            }
        ).model_dump()
    )
    spark = build_spark_session(settings)
    cast(Any, spark).client.set_retry_policies([])  # the server stopped: give up at once
    spark.sql(f"DROP DATABASE IF EXISTS {database} CASCADE")
    spark.sql(f"CREATE DATABASE {database} LOCATION '{folder / 'tables'}'")
    config = parse_table_config(
        {
            "table": "warmup",
            "source": {"type": "files", "path": str(folder / "source"), "format": "json"},
            "schema": {"columns": {"id": "string", "value": "long", "at": "timestamp"}},
            "validate": [
                {"rule": "not_null", "columns": ["id"]},
                {"rule": "range", "column": "value", "min": 0},
            ],
            "quality": {
                "metrics": [{"metric": "row_count"}, {"metric": "mean", "column": "value"}],
                "checks": [{"metric": "row_count", "min": 1}],
            },
            "journal": {"keys": ["id"], "track": ["value"], "order_by": "at"},
            "write": {"mode": "journal"},
        }
    )
    try:
        for day in (1, 2):
            _write_day(folder / "source", day)
            started = time.monotonic()
            result = run_table(config, spark=spark, settings=settings)
            print(f"day {day}: {result.status} in {time.monotonic() - started:.1f}s", flush=True)
        history("warmup", spark=spark, settings=settings)
    finally:
        with contextlib.suppress(Exception):
            spark.sql(f"DROP DATABASE IF EXISTS {database} CASCADE")
        spark.stop()
        shutil.rmtree(folder, ignore_errors=True)


def main() -> int:
    url, folder = sys.argv[1], Path(sys.argv[2])
    database = sys.argv[3] if len(sys.argv) > 3 else DEFAULT_DATABASE
    started = time.monotonic()
    try:
        warm_up(url, folder, database)
    except Exception as exc:  # the server stopped, or is busy with a restart: nothing is left to warm
        print(
            f"warm-up of {url} stopped: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        )
        return 1
    print(f"warm-up of {url} done in {time.monotonic() - started:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
