"""thimble-etl commands over the stack's Spark Connect server against Spark in the command's own process.

    ./dev stack up                                                  # the Spark Connect server on 15002
    python packages/etl/benchmarks/bench_connect.py                 # 3 rounds
    python packages/etl/benchmarks/bench_connect.py --rounds 5 --rows 10000 --remote sc://127.0.0.1:15002

Each command is timed from process start to exit, as a user meets it: ``run`` of a journal table from a
JSON source of ``--rows`` rows (a new table each round), then ``history``, ``changes --since 0`` and
``check --against-source`` of it. Rounds are interleaved: each round runs every command both ways, the way
that goes first alternating. Prints the median and spread (min-max) of each command's seconds both ways.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

COMMANDS = ("run", "history", "changes", "check --against-source")
GOALS = {"run": 8.0, "history": 3.0, "changes": 3.0, "check --against-source": 3.0}
WAYS = ("connect", "in-process")


def write_source(folder: Path, rows: int) -> None:
    folder.mkdir(parents=True)
    with (folder / "clients.json").open("w") as out:
        for i in range(rows):
            out.write(
                json.dumps(
                    {
                        "client_id": f"c{i:07}",
                        "segment": ("gold", "silver", "bronze")[i % 3],
                        "balance": round(i * 0.37, 2),
                        "updated_at": "2026-01-01T08:00:00",
                    }
                )
                + "\n"
            )


def write_config(path: Path, table: str, source: Path) -> None:
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


def environment(way: str, root: Path, remote: str) -> dict[str, str]:
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("THIMBLE_SPARK__", "THIMBLE_WAREHOUSE__"))
    }
    base["THIMBLE_WAREHOUSE__LOCATION"] = str(root / way / "warehouse")
    base["THIMBLE_WAREHOUSE__DATABASE"] = f"bench_{way.replace('-', '_')}_{uuid.uuid4().hex[:6]}"
    if way == "connect":
        return {**base, "THIMBLE_SPARK__REMOTE": remote}
    return {**base, "THIMBLE_WAREHOUSE__METASTORE": str(root / way / "metastore")}


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--remote", default=os.environ.get("THIMBLE_SPARK__REMOTE", "sc://127.0.0.1:15002"))
    args = parser.parse_args()
    console = Console()
    etl = [sys.executable, "-m", "thimble.etl"]
    seconds: dict[tuple[str, str], list[float]] = defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="bench-connect-") as tmp:
        root = Path(tmp)
        source = root / "source"
        write_source(source, args.rows)
        envs = {way: environment(way, root, args.remote) for way in WAYS}
        for round_number in range(args.rounds):
            order = WAYS if round_number % 2 == 0 else WAYS[::-1]
            for way in order:
                table = f"clients_{round_number}"
                config = root / f"{way}-{table}.json"
                write_config(config, table, source)
                env = envs[way]
                seconds[way, "run"].append(timed([*etl, "run", str(config), "--no-progress"], env))
                seconds[way, "history"].append(timed([*etl, "history", table], env))
                seconds[way, "changes"].append(timed([*etl, "changes", table, "--since", "0"], env))
                seconds[way, "check --against-source"].append(
                    timed([*etl, "check", str(config), "--against-source"], env)
                )
                console.print(
                    f"round {round_number + 1} {way}: "
                    + ", ".join(f"{c} {seconds[way, c][-1]:.1f}s" for c in COMMANDS)
                )
    table = Table(
        title=f"thimble-etl, process start to exit, {args.rows:,} rows, {args.rounds} interleaved rounds "
        f"(median, min-max seconds)",
        title_justify="left",
    )
    for column in ("command", f"Spark Connect ({args.remote})", "in process (local[2])", "goal over Connect"):
        table.add_column(column)

    def cell(values: list[float]) -> str:
        return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"

    for command in COMMANDS:
        connect = seconds["connect", command]
        mark = "met" if statistics.median(connect) <= GOALS[command] else "missed"
        table.add_row(
            f"thimble-etl {command}",
            cell(connect),
            cell(seconds["in-process", command]),
            f"<= {GOALS[command]:.0f} s ({mark})",
        )
    console.print(table)


if __name__ == "__main__":
    main()
