"""One request at a time, with no network: Thimble's app and the hand-written one called in one process.

    .venv/bin/python packages/modelops/benchmarks/bench_serving_in_process.py [--requests 3000] [--rounds 7]

At one connection a wrk run swings by ±15% on a shared two-core machine, most of it wrk, the kernel and
the other tenants. Here both ASGI apps are called directly, in turn, on one event loop: the figure is
what each app's own code costs per request, served as ``bench_serving.py`` serves it (Thimble with
validation, limits, Prometheus metrics in multiprocess mode, serving windows and the prediction log to
Kafka; online features from the same Redis hashes). Needs the local stack (Redis, Kafka). Prints, per
route, the median and spread (min-max) of microseconds per request over the interleaved rounds, and
the ratio of the medians (hand-written / Thimble: above 1.0 Thimble is faster).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_serving import ENTITIES, THREADS, prepare_inputs  # noqa: E402

App = Callable[[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]], Callable[..., Awaitable[None]]], Any]


async def call(app: App, path: str, body: bytes) -> int:
    """One POST through the app; its status."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"bench"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    status = 0
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client never disconnects
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def measure(
    routes: dict[str, tuple[App, str, Callable[[], bytes]]], requests: int, rounds: int
) -> dict[str, list[float]]:
    """Microseconds per request of each route, one list entry per round; the routes take turns."""
    seconds: dict[str, list[float]] = {name: [] for name in routes}
    names = list(routes)
    for number in range(rounds):
        order = names[number % len(names) :] + names[: number % len(names)]
        for name in order:
            app, path, body = routes[name]
            bodies = [body() for _ in range(requests)]
            started = time.perf_counter()
            for payload in bodies:
                status = await call(app, path, payload)
                if status != 200:
                    raise SystemExit(f"{name}: {path} answered {status}")
            seconds[name].append((time.perf_counter() - started) / requests * 1e6)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=3000, help="requests per route and round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    inputs = prepare_inputs()
    # As bench_serving.py starts them: Prometheus in multiprocess mode (its workers), the log to Kafka.
    os.environ |= THREADS | {
        "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(prefix="thimble-bench-metrics-"),
        "THIMBLE_ONLINE_STORE__KEY_PREFIX": inputs.prefix,
        "THIMBLE_LOGGING__LEVEL": "WARNING",
        "THIMBLE_MODELOPS__SERVER__FEATURE_TIMEOUT_MS": "2000",
        "BENCH_MODEL_FILE": str(inputs.work / "clf.joblib"),
        "BENCH_FEATURE_PREFIX": inputs.prefix,
    }
    from thimble.modelops.config import OVERRIDES_ENV

    os.environ[OVERRIDES_ENV] = json.dumps(
        {
            "modelops": {
                "registry": inputs.registry.url,
                "server": {"models": ["bench", "bench-features"], "prediction_log_topic": inputs.topic},
            }
        }
    )
    import handwritten_app
    import uvloop

    from thimble.modelops.server import app_from_settings

    thimble = app_from_settings()
    row = orjson.dumps(inputs.row)

    def client() -> bytes:
        return orjson.dumps({"client_id": random.randrange(ENTITIES)})

    routes: dict[str, tuple[App, str, Callable[[], bytes]]] = {
        "thimble": (thimble, "/v1/models/bench/predict", lambda: row),
        "hand-written FastAPI": (handwritten_app.app, "/predict", lambda: row),
        "thimble + online features": (thimble, "/v1/models/bench-features/predict", client),
        "hand-written + Redis": (handwritten_app.app, "/predict-features", client),
    }

    async def run() -> dict[str, list[float]]:
        async with thimble.router.lifespan_context(thimble):
            return await measure(routes, args.requests, args.rounds)

    try:
        seconds = uvloop.run(run())
    finally:
        inputs.clean_up()

    print(
        f"\nSingle-row requests, one at a time, both apps in one process (no network), "
        f"{args.requests} requests per round, median of {args.rounds} interleaved rounds"
    )
    print(f"{'route':<28}{'µs/request':>12}{'spread':>14}{'vs hand':>9}")
    baselines = {"thimble": "hand-written FastAPI", "thimble + online features": "hand-written + Redis"}
    for name, values in seconds.items():
        median = statistics.median(values)
        versus = ""
        if name in baselines:
            versus = f"{statistics.median(seconds[baselines[name]]) / median:.2f}x"
        elif name in baselines.values():
            versus = "1.00x"
        print(f"{name:<28}{median:>12.1f}{f'{min(values):.0f}-{max(values):.0f}':>14}{versus:>9}")


if __name__ == "__main__":
    main()
