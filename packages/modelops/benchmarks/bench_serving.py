"""Serving benchmark: Thimble vs `mlflow models serve` vs hand-written FastAPI endpoints, measured with wrk.

    .venv/bin/python packages/modelops/benchmarks/bench_serving.py [--duration 10] [--rounds 3]

Needs wrk (`./dev setup` installs it), the local stack (Redis, Kafka: `./dev stack up`) and MLflow in its own
environment (`.run/bench-venvs/mlflow`, created on first run). Thimble and the hand-written endpoints run
one uvicorn worker per core with BLAS threads 1; Thimble runs with validation, limits, metrics and
prediction logging to Kafka on. MLflow runs twice, with one worker and with one per core: its best at
each concurrency is the row Thimble is compared with (the table says which won). Online features are
compared with a hand-written endpoint that reads the same Redis hash itself; each of those requests asks
for a random one of 1,000 clients.
The servers take turns within each round, so a drift in the machine's load touches them alike; each cell
reports the median over the rounds (requests/s, p50, p99) and the spread of requests/s (lowest-highest);
ratios are between medians.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import joblib
import orjson
import redis

from thimble.modelops import Registry
from thimble.testing import free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
VENV_BIN = Path(sys.executable).parent
MLFLOW_VENV = ROOT / ".run" / "bench-venvs" / "mlflow"
WORKERS = os.cpu_count() or 2
THREADS = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
sys.path.insert(0, str(HERE))

from bench_model import FEATURES, bench, bench_features, train  # noqa: E402


def ensure_mlflow() -> Path:
    exe = MLFLOW_VENV / "bin" / "mlflow"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(MLFLOW_VENV)], check=True)
        subprocess.run(
            [
                str(VENV_BIN / "uv"),
                "pip",
                "install",
                "-q",
                "--python",
                str(MLFLOW_VENV / "bin" / "python"),
                "mlflow",
                "scikit-learn",
                "pandas",
            ],
            check=True,
        )
    return exe


def start(cmd: list[str], env: dict[str, str], ready_url: str, name: str) -> subprocess.Popen[bytes]:
    log = open(tempfile.mktemp(prefix=f"bench-{name}-", suffix=".log"), "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        cmd, env=os.environ | THREADS | env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + 600  # a loaded machine starts two spawned workers slowly
    while time.monotonic() < deadline:
        try:
            if httpx.get(ready_url, timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    stop(proc)
    raise SystemExit(f"{name} did not start; see {log.name}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


ENTITIES = 1000  # online-feature requests ask for a random one of this many client ids


def wrk(url: str, body: bytes, concurrency: int, duration: int) -> tuple[float, float, float]:
    """Requests/s, p50 and p99 (ms); a body of ``{"client_id": "*"}`` asks for a random client each time."""
    script = Path(tempfile.mktemp(suffix=".lua"))
    lua = f'wrk.method = "POST"\nwrk.body = {json.dumps(body.decode())}\nwrk.headers["Content-Type"] = "application/json"\n'
    if body == RANDOM_CLIENT:
        lua += (
            "request = function()\n"
            f"  return wrk.format(nil, nil, nil, '{{\"client_id\": ' .. math.random(0, {ENTITIES - 1}) .. '}}')\n"
            "end\n"
        )
    script.write_text(lua)
    threads = min(2, concurrency)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    script.unlink()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"{url}: {errors.group(1)} error responses\n{out}")

    def pct(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return rps, pct("50"), pct("99")


RANDOM_CLIENT = b'{"client_id": "*"}'


@dataclass(frozen=True)
class Inputs:
    """What every serving benchmark serves: the model in a registry, its features in Redis, a log topic."""

    work: Path
    registry: Registry
    prefix: str
    topic: str
    row: dict[str, float]

    def clean_up(self) -> None:
        redis.Redis().delete(*(f"{self.prefix}:bench-features:{client}" for client in range(ENTITIES)))


def prepare_inputs() -> Inputs:
    """Train and save both models, write the features of :data:`ENTITIES` clients, create the log topic."""
    import numpy as np
    from confluent_kafka.admin import AdminClient, NewTopic

    work = Path(tempfile.mkdtemp(prefix="thimble-bench-"))
    clf = train()
    joblib.dump(clf, work / "clf.joblib")
    registry = Registry(str(work / "models"))
    sample = [
        dict(zip(FEATURES, row, strict=True))
        for row in np.random.default_rng(1).normal(size=(500, 20)).tolist()
    ]
    registry.save(bench, artifacts={"clf": clf}, sample=sample)
    registry.save(
        bench_features, artifacts={"clf": clf}, sample=[{"client_id": i} | r for i, r in enumerate(sample)]
    )
    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    with redis.Redis().pipeline(transaction=False) as pipe:
        for client in range(ENTITIES):
            pipe.hset(
                f"{prefix}:bench-features:{client}",
                mapping={k: orjson.dumps(v) for k, v in sample[client % len(sample)].items()}
                | {"_event_time": 0},
            )
        pipe.execute()
    topic = f"bench-predictions-{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": "127.0.0.1:9092"})
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(30)
    return Inputs(work, registry, prefix, topic, sample[0])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--concurrency", default="1,8,64")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved measurements per cell")
    parser.add_argument(
        "--only",
        choices=("plain", "features", "mlflow"),
        action="append",
        help="measure only these groups (repeatable): thimble and hand-written without features, with "
        "online features, MLflow; all by default",
    )
    args = parser.parse_args()
    groups = set(args.only or ("plain", "features", "mlflow"))
    levels = [int(c) for c in args.concurrency.split(",")]

    inputs = prepare_inputs()
    work, registry, prefix, topic, row = inputs.work, inputs.registry, inputs.prefix, inputs.topic, inputs.row

    mlflow_model = work / "mlflow-model"
    if "mlflow" in groups:
        ensure_mlflow()
        subprocess.run(
            [
                str(MLFLOW_VENV / "bin" / "python"),
                "-c",
                f"import joblib, mlflow.sklearn; mlflow.sklearn.save_model(joblib.load({str(work / 'clf.joblib')!r}), {str(mlflow_model)!r})",
            ],
            check=True,
            capture_output=True,
        )

    ports = {name: free_port() for name in ("thimble", "handwritten", "mlflow-1", f"mlflow-{WORKERS}")}
    env_path = {"PYTHONPATH": str(HERE)}
    servers = []
    try:
        servers.append(
            start(
                [
                    str(VENV_BIN / "thimble-modelops"),
                    "serve",
                    "bench",
                    "bench-features",
                    "--port",
                    str(ports["thimble"]),
                    "--workers",
                    str(WORKERS),
                    "--registry",
                    registry.url,
                    "--prediction-log-topic",
                    topic,
                ],
                env_path
                | {
                    "THIMBLE_ONLINE_STORE__KEY_PREFIX": prefix,
                    "THIMBLE_LOGGING__LEVEL": "WARNING",
                    # the hand-written endpoint waits for Redis as long as it takes: no 503s on a loaded box
                    "THIMBLE_MODELOPS__SERVER__FEATURE_TIMEOUT_MS": "2000",
                },
                f"http://127.0.0.1:{ports['thimble']}/readyz",
                "thimble",
            )
        )
        servers.append(
            start(
                [
                    str(VENV_BIN / "uvicorn"),
                    "handwritten_app:app",
                    "--port",
                    str(ports["handwritten"]),
                    "--workers",
                    str(WORKERS),
                    "--loop",
                    "uvloop",
                    "--http",
                    "httptools",
                    "--no-access-log",
                    "--log-level",
                    "warning",
                    "--app-dir",
                    str(HERE),
                ],
                {"BENCH_MODEL_FILE": str(work / "clf.joblib"), "BENCH_FEATURE_PREFIX": prefix},
                f"http://127.0.0.1:{ports['handwritten']}/docs",
                "handwritten",
            )
        )
        for workers in sorted({1, WORKERS}) if "mlflow" in groups else ():
            servers.append(
                start(
                    [
                        str(MLFLOW_VENV / "bin" / "mlflow"),
                        "models",
                        "serve",
                        "-m",
                        str(mlflow_model),
                        "--env-manager",
                        "local",
                        "-p",
                        str(ports[f"mlflow-{workers}"]),
                        "-h",
                        "127.0.0.1",
                        "-w",
                        str(workers),
                    ],
                    {
                        "MLFLOW_TRACKING_URI": f"file://{work / 'mlruns'}",
                        "PATH": f"{MLFLOW_VENV / 'bin'}:{os.environ['PATH']}",
                    },
                    f"http://127.0.0.1:{ports[f'mlflow-{workers}']}/ping",
                    f"mlflow-{workers}",
                )
            )
        mlflow_body = orjson.dumps({"dataframe_records": [row]})
        targets = {
            **{
                f"mlflow -w {w}": (f"http://127.0.0.1:{ports[f'mlflow-{w}']}/invocations", mlflow_body)
                for w in sorted({1, WORKERS})
            },
            "hand-written FastAPI": (f"http://127.0.0.1:{ports['handwritten']}/predict", orjson.dumps(row)),
            "hand-written + Redis": (
                f"http://127.0.0.1:{ports['handwritten']}/predict-features",
                RANDOM_CLIENT,
            ),
            "thimble": (f"http://127.0.0.1:{ports['thimble']}/v1/models/bench/predict", orjson.dumps(row)),
            "thimble + online features": (
                f"http://127.0.0.1:{ports['thimble']}/v1/models/bench-features/predict",
                RANDOM_CLIENT,
            ),
        }
        group = {
            "hand-written FastAPI": "plain",
            "thimble": "plain",
            "hand-written + Redis": "features",
            "thimble + online features": "features",
        }
        targets = {n: t for n, t in targets.items() if group.get(n, "mlflow") in groups}
        for name, (url, body) in targets.items():
            first = b'{"client_id": 7}' if body == RANDOM_CLIENT else body
            check = httpx.post(url, content=first, headers={"content-type": "application/json"}, timeout=10)
            assert check.status_code == 200, f"{name}: {check.status_code} {check.text}"
            wrk(url, body, 8, 2)  # warm-up
        rounds: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
        for c in levels:
            for _ in range(args.rounds):
                for name, (url, body) in targets.items():
                    rounds.setdefault((name, c), []).append(wrk(url, body, c, args.duration))
        results = {
            cell: (
                statistics.median(r[0] for r in runs),
                statistics.median(r[1] for r in runs),
                statistics.median(r[2] for r in runs),
                min(r[0] for r in runs),
                max(r[0] for r in runs),
            )
            for cell, runs in rounds.items()
        }
    finally:
        for proc in servers:
            stop(proc)
        inputs.clean_up()

    print(
        f"\nSingle-row requests, {WORKERS} uvicorn workers each, BLAS threads 1, "
        f"wrk {args.duration}s per measurement, median of {args.rounds} interleaved rounds"
    )
    print(
        f"{'server':<28}{'conc':>5}{'req/s':>10}{'spread':>14}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'vs mlflow':>11}{'vs hand':>9}"
    )
    mlflow_names = [n for n in targets if n.startswith("mlflow")]
    for c in levels:
        best = max(mlflow_names, key=lambda n: results[(n, c)][0]) if mlflow_names else None
        ml = results[(best, c)][0] if best else None
        for name in targets:
            rps, p50, p99, low, high = results[(name, c)]
            hand_name = (
                "hand-written + Redis" if "features" in name or "Redis" in name else "hand-written FastAPI"
            )
            hand = results[(hand_name, c)][0] if hand_name in targets else None
            mark = " (best mlflow)" if name == best else ""
            print(
                f"{name:<28}{c:>5}{rps:>10.0f}{f'{low:.0f}-{high:.0f}':>14}{p50:>9.2f}{p99:>9.2f}"
                f"{_ratio(rps, ml):>11}{_ratio(rps, hand):>9}{mark}"
            )


def _ratio(value: float, baseline: float | None) -> str:
    return f"{value / baseline:.2f}x" if baseline else "-"


if __name__ == "__main__":
    main()
