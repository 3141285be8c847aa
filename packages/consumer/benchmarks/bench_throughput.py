"""Throughput of a typed handler, at-least-once, on the local broker; prints a table.

N small JSON messages (~200 B) are produced once to a fresh topic; then each contestant, in its own
process, reads all of them with a fresh consumer group:

- raw:          consume only (the ceiling)
- handwritten:  a careful confluent-kafka loop: decode + pydantic validate, produce the output,
                store offsets only after the produce acks (per-batch watermarks), auto-commit
- thimble:      the same handler as a thimble.consumer App
- faststream:   the same handler in FastStream (confluent backend, AckPolicy.ACK), in its own venv

A run ends when every input offset is stored (at-least-once: it will be committed). "p99 poll→store"
is the time from a message being polled to its offset being stored (committed by the next auto-commit,
at most ``auto.commit.interval.ms`` later); sampled on every 64th message.

    .venv/bin/python packages/consumer/benchmarks/bench_throughput.py --messages 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from collections import deque
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

HERE = Path(__file__).resolve()
ROOT = HERE.parents[3]
FASTSTREAM_PYTHON = ROOT / ".run" / "bench-venvs" / "faststream" / "bin" / "python"
SAMPLE_EVERY = 64


class ClientEvent(BaseModel):
    client_id: int
    kind: str
    amount: float
    currency: str
    channel: str
    session: str
    note: str
    ts: datetime


class ClientFeatures(BaseModel):
    client_id: int
    kind: str
    amount_cents: int


# -- the workload (shared by every contestant) ---------------------------------------------------


def models() -> tuple[Any, Any]:
    return ClientEvent, ClientFeatures


def featurize(event: Any, features_cls: Any) -> Any:
    return features_cls(client_id=event.client_id, kind=event.kind, amount_cents=int(event.amount * 100))


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def p99_ms(samples: list[float]) -> float | None:
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


class Latency:
    """Samples poll→store latency: ``polled`` every 64th message, ``stored`` when offsets are stored."""

    def __init__(self) -> None:
        self.open: dict[tuple[str, int], deque[tuple[int, float]]] = {}
        self.samples: list[float] = []
        self.stored: dict[tuple[str, int], int] = {}
        self._n = 0

    def polled(self, msgs: list[Any]) -> None:
        now = time.perf_counter()
        for msg in msgs:
            self._n += 1
            if self._n % SAMPLE_EVERY == 0:
                self.open.setdefault((msg.topic(), msg.partition()), deque()).append((msg.offset(), now))

    def on_store(self, offsets: list[Any]) -> None:
        now = time.perf_counter()
        for tp in offsets:
            key = (tp.topic, tp.partition)
            self.stored[key] = max(self.stored.get(key, 0), tp.offset)
            queue = self.open.get(key)
            while queue and queue[0][0] < tp.offset:
                self.samples.append(now - queue.popleft()[1])


def result(name: str, n: int, seconds: float, latency: list[float] | None) -> None:
    print(
        json.dumps(
            {
                "name": name,
                "messages": n,
                "seconds": seconds,
                "p99_ms": p99_ms(latency or []),
                "rss_mb": rss_mb(),
            }
        ),
        flush=True,
    )


# -- contestants (each runs in its own process) ---------------------------------------------------


def run_raw(conf: dict[str, Any], topic: str, n: int, _out: str) -> None:
    from confluent_kafka import Consumer

    consumer = Consumer(
        {**conf, "group.id": f"bench-raw-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    seen, start = 0, None
    while seen < n:
        msgs = consumer.consume(500, 0.5)
        if msgs and start is None:
            start = time.perf_counter()
        seen += sum(1 for m in msgs if m.error() is None)
    result("raw", n, time.perf_counter() - (start or 0), None)
    consumer.close()


def run_handwritten(conf: dict[str, Any], topic: str, n: int, out: str) -> None:
    from confluent_kafka import Consumer, Producer, TopicPartition

    event_cls, features_cls = models()
    consumer = Consumer(
        {
            **conf,
            "group.id": f"bench-hand-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
            "enable.auto.offset.store": False,
            "auto.commit.interval.ms": 1000,
        }
    )
    producer = Producer(
        {**conf, "acks": "all", "enable.idempotence": True, "linger.ms": 5, "compression.type": "lz4"}
    )
    consumer.subscribe([topic])
    latency = Latency()
    batches: deque[tuple[list[int], dict[tuple[str, int], int]]] = deque()  # [remaining], last offsets
    start = None
    validate = event_cls.model_validate_json

    def store_done() -> int:
        stored = 0
        while batches and batches[0][0][0] == 0:
            _, last = batches.popleft()
            offsets = [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]
            consumer.store_offsets(offsets=offsets)
            latency.on_store(offsets)
            stored += sum(1 for _ in last)
        return stored

    while True:
        msgs = consumer.consume(500, 0.1)
        if msgs:
            if start is None:
                start = time.perf_counter()
            latency.polled(msgs)
            remaining = [0]
            last: dict[tuple[str, int], int] = {}

            def ack(err: Any, _msg: Any, remaining: list[int] = remaining) -> None:
                if err is not None:
                    raise SystemExit(f"delivery failed: {err}")
                remaining[0] -= 1

            for msg in msgs:
                if msg.error() is not None:
                    continue
                out_value = featurize(validate(msg.value()), features_cls)
                remaining[0] += 1
                producer.produce(
                    out, out_value.__pydantic_serializer__.to_json(out_value), msg.key(), on_delivery=ack
                )
                last[(msg.topic(), msg.partition())] = msg.offset()
            batches.append((remaining, last))
        producer.poll(0)
        store_done()
        if start is not None and sum(latency.stored.values()) >= n:
            break
    result("handwritten", n, time.perf_counter() - start, latency.samples)
    consumer.close()


def run_thimble(conf: dict[str, Any], topic: str, n: int, out: str) -> None:
    sys.path.insert(0, str(ROOT / "packages" / "consumer" / "src"))
    from thimble.common.config import load_settings
    from thimble.consumer import App, ConsumerSettings, _delivery, _runner

    features_cls = ClientFeatures
    app = App("bench-thimble")

    @app.handler(source=topic, sink=out)
    def handle(event: ClientEvent) -> ClientFeatures:
        return featurize(event, features_cls)

    latency = Latency()
    state: dict[str, float] = {}
    real_store = _delivery.store

    def store(consumer: Any, offsets: list[Any]) -> None:
        real_store(consumer, offsets)
        latency.on_store(offsets)
        if sum(latency.stored.values()) >= n and "end" not in state:
            state["end"] = time.perf_counter()
            runner.request_stop()

    _delivery.store = store  # type: ignore[assignment]

    class BenchRunner(_runner.Runner):
        def _enqueue(self, batch: list[Any]) -> None:
            state.setdefault("start", time.perf_counter())
            latency.polled(batch)
            super()._enqueue(batch)

    settings = load_settings(
        ConsumerSettings,
        overrides={
            "kafka": {"bootstrap_servers": conf["bootstrap.servers"]},
            "consumer": {"group_id": f"bench-thimble-{uuid.uuid4().hex}", "create_topics": True},
            "metrics": {"enabled": False},
            "logging": {"level": "WARNING"},
        },
    )
    runner = BenchRunner(app, settings)
    code = runner.run()
    if code != 0:
        raise SystemExit(f"thimble exited {code}")
    result("thimble", n, state["end"] - state["start"], latency.samples)


def run_faststream(conf: dict[str, Any], topic: str, n: int, out: str) -> None:
    import asyncio

    from faststream import AckPolicy, FastStream
    from faststream.confluent import KafkaBroker

    features_cls = ClientFeatures
    broker = KafkaBroker(conf["bootstrap.servers"], logger=None)
    app = FastStream(broker, logger=None)
    state: dict[str, Any] = {"count": 0}
    done = asyncio.Event()

    @broker.subscriber(
        topic, group_id=f"bench-fs-{uuid.uuid4().hex}", auto_offset_reset="earliest", ack_policy=AckPolicy.ACK
    )
    @broker.publisher(out)
    async def handle(event: ClientEvent) -> ClientFeatures:
        state.setdefault("start", time.perf_counter())
        state["count"] += 1
        if state["count"] >= n:
            state["end"] = time.perf_counter()
            done.set()
        return featurize(event, features_cls)

    async def main() -> None:
        task = asyncio.create_task(app.run())
        await done.wait()
        await asyncio.sleep(0.5)  # let the last ack go out
        app.exit()
        await task

    asyncio.run(main())
    result("faststream", n, state["end"] - state["start"], None)


CONTESTANTS = {
    "raw": run_raw,
    "handwritten": run_handwritten,
    "thimble": run_thimble,
    "faststream": run_faststream,
}


# -- orchestration --------------------------------------------------------------------------------


def produce_input(conf: dict[str, Any], topic: str, n: int, partitions: int) -> int:
    import orjson
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    admin = AdminClient(conf)
    outs = [f"{topic}-{name}-out" for name in CONTESTANTS]
    for future in admin.create_topics([NewTopic(t, partitions, 1) for t in [topic, *outs]]).values():
        future.result(30)
    producer = Producer({**conf, "linger.ms": 20, "batch.size": 1_000_000, "compression.type": "lz4"})
    size = 0
    for i in range(n):
        value = orjson.dumps(
            {
                "client_id": i % 100_000,
                "kind": "order",
                "amount": round(i % 997 * 1.37, 2),
                "currency": "EUR",
                "channel": "web",
                "session": uuid.UUID(int=i).hex,
                "note": "n" * 36,
                "ts": "2026-01-01T12:00:00+00:00",
            }
        )
        size += len(value)
        while True:
            try:
                producer.produce(topic, value, str(i % 100_000).encode())
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(120) == 0
    return size // n


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--bootstrap-servers", default="127.0.0.1:9092")
    parser.add_argument(
        "--faststream-messages", type=int, default=None, help="Fewer messages for FastStream."
    )
    parser.add_argument("--skip-faststream", action="store_true")
    parser.add_argument("--run-one", choices=sorted(CONTESTANTS), help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    args = parser.parse_args()
    conf = {"bootstrap.servers": args.bootstrap_servers}
    if args.run_one:
        CONTESTANTS[args.run_one](conf, args.topic, args.messages, f"{args.topic}-{args.run_one}-out")
        return

    topic = f"bench-in-{uuid.uuid4().hex[:8]}"
    print(f"producing {args.messages:,} messages to {topic} ...", flush=True)
    avg = produce_input(conf, topic, args.messages, args.partitions)
    rows: dict[str, dict[str, Any]] = {}
    for name in ("raw", "handwritten", "thimble", "faststream"):
        python = sys.executable
        n = args.messages
        if name == "faststream":
            if args.skip_faststream:
                rows[name] = {"note": "skipped (--skip-faststream)"}
                continue
            if not FASTSTREAM_PYTHON.exists():
                rows[name] = {
                    "note": f"no venv at {FASTSTREAM_PYTHON} (python3 -m venv + pip install 'faststream[confluent]')"
                }
                continue
            python = str(FASTSTREAM_PYTHON)
            n = min(n, args.faststream_messages or n)
        print(f"running {name} ({n:,} messages) ...", flush=True)
        proc = subprocess.run(
            [
                python,
                str(HERE),
                "--run-one",
                name,
                "--topic",
                topic,
                "--messages",
                str(n),
                "--bootstrap-servers",
                args.bootstrap_servers,
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            rows[name] = {"note": f"failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}"}
            continue
        rows[name] = json.loads(lines[-1])
        rows[name]["rate"] = rows[name]["messages"] / rows[name]["seconds"]

    hand = rows.get("handwritten", {}).get("rate")
    fast = rows.get("faststream", {}).get("rate")
    print()
    print(
        f"{args.messages:,} messages of ~{avg} B, {args.partitions} partitions, local broker, at-least-once"
    )
    print()
    header = f"| {'contestant':<12} | {'msgs/s':>10} | {'vs handwritten':>14} | {'thimble vs it':>13} | {'p99 poll→store':>14} | {'peak RSS':>9} |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    thimble = rows.get("thimble", {}).get("rate")
    for name, row in rows.items():
        if "rate" not in row:
            print(f"| {name:<12} | {row['note']}")
            continue
        vs_hand = f"{row['rate'] / hand:.2f}" if hand else "-"
        vs_it = f"{thimble / row['rate']:.2f}x" if thimble and name != "thimble" else "-"
        p99 = f"{row['p99_ms']:.0f} ms" if row.get("p99_ms") is not None else "-"
        print(
            f"| {name:<12} | {row['rate']:>10,.0f} | {vs_hand:>14} | {vs_it:>13} | {p99:>14} | {row['rss_mb']:>6.0f} MB |"
        )
    if thimble and hand:
        print(f"\nthimble / handwritten = {thimble / hand:.2f} (goal >= 0.85)")
    if thimble and fast:
        print(f"thimble / faststream  = {thimble / fast:.1f}x (goal >= 10x)")


if __name__ == "__main__":
    main()
