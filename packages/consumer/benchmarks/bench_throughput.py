"""Throughput of a typed handler, at-least-once, on the local broker; prints a table.

N small JSON messages (~200 B) are produced once to a fresh topic; then each contestant, in its own
process, reads all of them with a fresh consumer group:

- raw:            consume only (the ceiling)
- thimble-bytes:  a thimble.consumer batch handler of raw bytes that returns nothing (the framework's
                  own ceiling: consuming, tracking and storing offsets)
- handwritten:    a careful confluent-kafka loop: decode + pydantic validate, produce the output,
                  store offsets only after the produce acks (per-batch watermarks), auto-commit
- handwritten-batch: the hand-written loop at its fastest for batches of 500: the batch's records
                  joined into one JSON array and validated in one call (which trusts the input: a
                  malformed record could turn into valid elements), the collector left alone while a
                  batch is alive; what any batch handler of this job can reach here
- thimble:        the same handler as a thimble.consumer App (one message per call)
- thimble-batch:  the same work as a batch handler (``list[ClientEvent]``, batches of 500)
- faststream:     the same handler in FastStream (confluent backend, AckPolicy.ACK: each output's
                  confirmation awaited before the next message)
- faststream-batch: the same work as a FastStream batch subscriber and batch publisher (batches of
                  500, their outputs confirmed together before the batch is acknowledged): its best
                  at-least-once configuration
- quix:           the same job in Quix Streams (``model_validate_json``, output to a topic,
                  at-least-once)

raw and the hand-written loops wait 20 ms, not librdkafka's default 1 s, before fetching again for a
partition whose local queue was full (``fetch.queue.backoff.ms``, as thimble.consumer does): with the
default a consumer that empties its queue faster than that waits idle.

FastStream and Quix Streams run in their own virtual environments under ``.run/bench-venvs/``, which
the script creates (with uv when it is there, else venv + pip) the first time it needs them.

Contestants run interleaved, ``--rounds`` times, each round in a different order, so a neighbour's
burst on a shared machine lands on every contestant alike; the table shows the median of the rounds
and their spread (min-max), and ratios are medians of the per-round ratios.

A run ends when every input offset is stored (at-least-once: it will be committed). "p99 poll→store"
is the time from a message being polled to its offset being stored (committed by the next auto-commit,
at most ``auto.commit.interval.ms`` later); sampled on every 64th message.

    .venv/bin/python packages/consumer/benchmarks/bench_throughput.py --messages 200000 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
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
VENVS = ROOT / ".run" / "bench-venvs"
# Contestants that run in an environment of their own: what it installs.
ENVIRONMENTS = {
    "faststream": ["faststream[confluent]==0.7.8"],
    "quix": ["quixstreams==3.28.1"],
}
SHARED_ENVIRONMENT = {"faststream-batch": "faststream"}
"""Contestants that run in another contestant's environment."""
SAMPLE_EVERY = 64
FETCH = {"fetch.queue.backoff.ms": 20}


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


_cpu: dict[str, float] = {}


def mark(point: str) -> float:
    """``time.perf_counter()``; the first call for ``point`` also notes the process's CPU time."""
    _cpu.setdefault(point, time.process_time())
    return time.perf_counter()


def result(name: str, n: int, seconds: float, latency: list[float] | None) -> None:
    print(
        json.dumps(
            {
                "name": name,
                "messages": n,
                "seconds": seconds,
                "p99_ms": p99_ms(latency or []),
                "rss_mb": rss_mb(),
                "cpu_us": (_cpu.get("end", time.process_time()) - _cpu["start"]) / n * 1e6,
            }
        ),
        flush=True,
    )


# -- contestants (each runs in its own process) ---------------------------------------------------


def run_raw(conf: dict[str, Any], topic: str, n: int, _out: str) -> None:
    from confluent_kafka import Consumer

    consumer = Consumer(
        {**conf, **FETCH, "group.id": f"bench-raw-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    seen, start = 0, None
    while seen < n:
        msgs = consumer.consume(500, 0.5)
        if msgs and start is None:
            start = mark("start")
        seen += sum(1 for m in msgs if m.error() is None)
    result("raw", n, mark("end") - (start or 0), None)
    consumer.close()


def hand_written_clients(conf: dict[str, Any], topic: str, group: str) -> tuple[Any, Any]:
    """The hand-written loops' consumer, subscribed to ``topic`` (offsets stored by hand, auto-commit),
    and their producer."""
    from confluent_kafka import Consumer, Producer

    consumer = Consumer(
        {
            **conf,
            **FETCH,
            "group.id": f"{group}-{uuid.uuid4().hex}",
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
    return consumer, producer


def run_handwritten(conf: dict[str, Any], topic: str, n: int, out: str) -> None:
    from confluent_kafka import TopicPartition

    event_cls, features_cls = models()
    consumer, producer = hand_written_clients(conf, topic, "bench-hand")
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
                start = mark("start")
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
    result("handwritten", n, mark("end") - start, latency.samples)
    consumer.close()


def run_handwritten_batch(conf: dict[str, Any], topic: str, n: int, out: str) -> None:
    """The hand-written loop at its fastest for a batch: one validation call for the whole batch, and
    the garbage collector left alone while a batch is alive (as thimble.consumer does)."""
    import gc

    from confluent_kafka import TopicPartition
    from pydantic import TypeAdapter

    gc.freeze()
    gc.set_threshold(20 * 500, *gc.get_threshold()[1:])

    _, features_cls = models()
    consumer, producer = hand_written_clients(conf, topic, "bench-handbatch")
    latency = Latency()
    batches: deque[tuple[list[int], list[Any]]] = deque()  # [remaining], offsets to store
    start = None
    validate_all = TypeAdapter(list[ClientEvent]).validate_json
    to_json = features_cls.__pydantic_serializer__.to_json

    while True:
        msgs = [m for m in consumer.consume(500, 0.1) if m.error() is None]
        if msgs:
            if start is None:
                start = mark("start")
            latency.polled(msgs)
            # Trusts its input: joined, a malformed record could become valid elements (thimble never joins).
            events = validate_all(b"[" + b",".join([m.value() for m in msgs]) + b"]")
            remaining = [len(msgs)]

            def ack(err: Any, _msg: Any, remaining: list[int] = remaining) -> None:
                if err is not None:
                    raise SystemExit(f"delivery failed: {err}")
                remaining[0] -= 1

            produce = producer.produce
            for msg, event in zip(msgs, events, strict=True):
                produce(out, to_json(featurize(event, features_cls)), msg.key(), on_delivery=ack)
            last = {(m.topic(), m.partition()): m.offset() for m in msgs}
            batches.append((remaining, [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]))
        producer.poll(0)
        while batches and batches[0][0][0] == 0:
            offsets = batches.popleft()[1]
            consumer.store_offsets(offsets=offsets)
            latency.on_store(offsets)
        if start is not None and sum(latency.stored.values()) >= n:
            break
    result("handwritten-batch", n, mark("end") - start, latency.samples)
    consumer.close()


def _run_thimble(conf: dict[str, Any], topic: str, n: int, out: str, *, kind: str) -> None:
    sys.path.insert(0, str(ROOT / "packages" / "consumer" / "src"))
    from thimble.common.config import load_settings
    from thimble.consumer import App, ConsumerSettings, _delivery, _runner

    features_cls = ClientFeatures
    app = App("bench-thimble")
    if kind == "thimble-batch":

        @app.handler(source=topic, sink=out, batch_size=500)
        def handle_batch(events: list[ClientEvent]) -> list[ClientFeatures]:
            return [featurize(event, features_cls) for event in events]

    elif kind == "thimble-bytes":

        @app.handler(source=topic, batch_size=500)
        def handle_bytes(values: list[bytes]) -> None:
            return None

    else:

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
            state["end"] = mark("end")
            runner.request_stop()

    _delivery.store = store  # type: ignore[assignment]

    class BenchRunner(_runner.Runner):
        def _accept(self, batch: list[Any]) -> list[Any]:
            if "start" not in state:
                state["start"] = mark("start")
            latency.polled(batch)
            return super()._accept(batch)

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
    result(kind, n, state["end"] - state["start"], latency.samples)


def run_thimble(conf: dict[str, Any], topic: str, n: int, out: str) -> None:
    _run_thimble(conf, topic, n, out, kind="thimble")


def run_thimble_batch(conf: dict[str, Any], topic: str, n: int, out: str) -> None:
    _run_thimble(conf, topic, n, out, kind="thimble-batch")


def run_thimble_bytes(conf: dict[str, Any], topic: str, n: int, out: str) -> None:
    _run_thimble(conf, topic, n, out, kind="thimble-bytes")


def _run_faststream(conf: dict[str, Any], topic: str, n: int, out: str, *, kind: str) -> None:
    import asyncio

    from faststream import AckPolicy, FastStream
    from faststream.confluent import KafkaBroker

    features_cls = ClientFeatures
    broker = KafkaBroker(conf["bootstrap.servers"], logger=None)
    app = FastStream(broker, logger=None)
    state: dict[str, Any] = {"count": 0}
    done = asyncio.Event()

    def handled(count: int) -> None:
        if "start" not in state:
            state["start"] = mark("start")
        state["count"] += count
        if state["count"] >= n and "end" not in state:
            state["end"] = mark("end")
            done.set()

    subscribed = {
        "group_id": f"bench-fs-{uuid.uuid4().hex}",
        "auto_offset_reset": "earliest",
        "ack_policy": AckPolicy.ACK,
    }
    if kind == "faststream-batch":
        # Its best at-least-once configuration: a batch's outputs are sent together and their
        # confirmations awaited together, before the batch is acknowledged.
        @broker.subscriber(topic, batch=True, max_records=500, **subscribed)
        @broker.publisher(out, batch=True)
        async def handle_batch(events: list[ClientEvent]) -> list[ClientFeatures]:
            handled(len(events))
            return [featurize(event, features_cls) for event in events]

    else:  # each output's confirmation awaited before the next message

        @broker.subscriber(topic, **subscribed)
        @broker.publisher(out)
        async def handle(event: ClientEvent) -> ClientFeatures:
            handled(1)
            return featurize(event, features_cls)

    async def main() -> None:
        task = asyncio.create_task(app.run())
        await done.wait()
        await asyncio.sleep(0.5)  # let the last ack go out
        app.exit()
        await task

    asyncio.run(main())
    result(kind, n, state["end"] - state["start"], None)


def run_faststream(conf: dict[str, Any], topic: str, n: int, out: str) -> None:
    _run_faststream(conf, topic, n, out, kind="faststream")


def run_faststream_batch(conf: dict[str, Any], topic: str, n: int, out: str) -> None:
    _run_faststream(conf, topic, n, out, kind="faststream-batch")


def run_quix(conf: dict[str, Any], topic: str, n: int, out: str) -> None:
    from quixstreams import Application

    features_cls = ClientFeatures
    app = Application(
        broker_address=conf["bootstrap.servers"],
        consumer_group=f"bench-quix-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        processing_guarantee="at-least-once",
        loglevel="WARNING",
    )
    source = app.topic(topic, value_deserializer="bytes", key_deserializer="bytes")
    sink = app.topic(out, value_serializer="bytes", key_serializer="bytes")
    validate = ClientEvent.model_validate_json
    state: dict[str, Any] = {"count": 0}

    def work(raw: bytes) -> bytes:
        if "start" not in state:
            state["start"] = mark("start")
        features = featurize(validate(raw), features_cls)
        state["count"] += 1
        if state["count"] >= n and "end" not in state:
            state["end"] = mark("end")
            app.stop()
        return bytes(features.__pydantic_serializer__.to_json(features))

    app.dataframe(source).apply(work).to_topic(sink)
    app.run()  # stopping commits the last checkpoint (outputs flushed, then offsets)
    result("quix", n, state["end"] - state["start"], None)


CONTESTANTS = {
    "raw": run_raw,
    "thimble-bytes": run_thimble_bytes,
    "handwritten": run_handwritten,
    "handwritten-batch": run_handwritten_batch,
    "thimble": run_thimble,
    "thimble-batch": run_thimble_batch,
    "faststream": run_faststream,
    "faststream-batch": run_faststream_batch,
    "quix": run_quix,
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


def ensure_environment(name: str) -> Path:
    """The Python of contestant ``name``'s own virtual environment, created on first use."""
    venv = VENVS / name
    python = venv / "bin" / "python"
    marker = venv / "installed.txt"
    wanted = "\n".join(["pydantic>=2", *ENVIRONMENTS[name]])
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    print(f"creating the {name} environment in {venv} ...", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    uv = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    packages = wanted.splitlines()
    if Path(uv).exists() or shutil.which("uv"):
        subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
        subprocess.run([uv, "pip", "install", "-q", "--python", str(python), *packages], check=True)
    else:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *packages], check=True)
    marker.write_text(wanted)
    return python


def run_contestant(name: str, python: str, topic: str, n: int, bootstrap: str) -> dict[str, Any]:
    command = [python, str(HERE), "--run-one", name, "--topic", topic, "--messages", str(n)]
    proc = subprocess.run(
        [*command, "--bootstrap-servers", bootstrap],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"note": f"failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}"}
    row: dict[str, Any] = json.loads(lines[-1])
    row["rate"] = row["messages"] / row["seconds"]
    return row


def _spread(values: list[float], fmt: str) -> str:
    return f"{format(min(values), fmt)}-{format(max(values), fmt)}" if len(values) > 1 else "-"


def summarise(rounds: list[dict[str, dict[str, Any]]], names: list[str]) -> dict[str, dict[str, Any]]:
    """Per contestant: medians and spreads over the rounds; ratios as medians of per-round ratios."""
    table: dict[str, dict[str, Any]] = {}
    for name in names:
        rows = [r[name] for r in rounds if "rate" in r.get(name, {})]
        if not rows:
            notes = [r[name]["note"] for r in rounds if name in r]
            table[name] = {"note": notes[0] if notes else "not run"}
            continue

        def paired(other: str, rows: list[dict[str, Any]] = rows, name: str = name) -> float | None:
            ratios = [
                r[name]["rate"] / r[other]["rate"]
                for r in rounds
                if "rate" in r.get(name, {}) and "rate" in r.get(other, {})
            ]
            return statistics.median(ratios) if ratios else None

        p99s = [r["p99_ms"] for r in rows if r.get("p99_ms") is not None]
        table[name] = {
            "rounds": len(rows),
            "messages": rows[0]["messages"],
            "rate": statistics.median(r["rate"] for r in rows),
            "rate_spread": _spread([r["rate"] for r in rows], ",.0f"),
            "vs_handwritten": paired("handwritten"),
            "vs_raw": paired("raw"),
            "vs_quix": paired("quix"),
            "vs_faststream_batch": paired("faststream-batch"),
            "vs_handwritten_batch": paired("handwritten-batch"),
            "p99_ms": statistics.median(p99s) if p99s else None,
            "p99_spread": _spread(p99s, ".0f") if p99s else "-",
            "rss_mb": statistics.median(r["rss_mb"] for r in rows),
            "cpu_us": statistics.median(r["cpu_us"] for r in rows),
        }
    return table


def print_table(table: dict[str, dict[str, Any]]) -> None:
    columns = (
        f"| {'contestant':<17} | {'msgs/s (median)':>15} | {'spread':>19} | {'vs handwritten':>14} "
        f"| {'p99 poll→store':>14} | {'p99 spread':>11} | {'peak RSS':>9} | {'CPU/msg':>8} |"
    )
    print(columns)
    print("|" + "|".join("-" * len(c) for c in columns.split("|")[1:-1]) + "|")
    for name, row in table.items():
        if "rate" not in row:
            print(f"| {name:<17} | {row['note']}")
            continue
        vs = f"{row['vs_handwritten']:.2f}" if row["vs_handwritten"] is not None else "-"
        p99 = f"{row['p99_ms']:.0f} ms" if row["p99_ms"] is not None else "-"
        print(
            f"| {name:<17} | {row['rate']:>15,.0f} | {row['rate_spread']:>19} | {vs:>14} "
            f"| {p99:>14} | {row['p99_spread']:>11} | {row['rss_mb']:>6.0f} MB | {row['cpu_us']:>5.1f} µs |"
        )


def print_goals(table: dict[str, dict[str, Any]]) -> None:
    hand, one, batch = table.get("handwritten", {}), table.get("thimble", {}), table.get("thimble-batch", {})

    def line(what: str, value: float | None, goal: float, unit: str = "x") -> None:
        if value is None:
            print(f"{what:<46} -")
            return
        verdict = "ok" if value >= goal else "MISSED"
        print(f"{what:<46} {value:.2f}{unit} (goal >= {goal}{unit}) {verdict}")

    print()
    if table.get("thimble-bytes", {}).get("vs_raw") is not None:
        print(f"{'thimble-bytes / raw (no goal)':<46} {table['thimble-bytes']['vs_raw']:.2f}x")
    line("thimble / handwritten", one.get("vs_handwritten"), 1.0)
    line("thimble-batch / handwritten", batch.get("vs_handwritten"), 2.0)
    if table.get("handwritten-batch", {}).get("vs_handwritten") is not None:
        ceiling = table["handwritten-batch"]["vs_handwritten"]
        print(f"{'handwritten-batch / handwritten (no goal)':<46} {ceiling:.2f}x")
    if batch.get("vs_handwritten_batch") is not None:
        print(f"{'thimble-batch / handwritten-batch (no goal)':<46} {batch['vs_handwritten_batch']:.2f}x")
    line("thimble / quix", one.get("vs_quix"), 1.5)
    if batch.get("vs_faststream_batch") is not None:
        print(f"{'thimble-batch / faststream-batch (no goal)':<46} {batch['vs_faststream_batch']:.2f}x")
    if "p99_ms" in hand and "p99_ms" in one and hand["p99_ms"] and one["p99_ms"]:
        line("p99 poll→store, handwritten / thimble", hand["p99_ms"] / one["p99_ms"], 1.0)
    if "rss_mb" in hand and "rss_mb" in one:
        ratio = one["rss_mb"] / hand["rss_mb"]
        verdict = "ok" if ratio <= 1.25 else "MISSED"
        print(f"{'peak RSS, thimble / handwritten':<46} {ratio:.2f}x (goal <= 1.25x) {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--bootstrap-servers", default="127.0.0.1:9092")
    parser.add_argument(
        "--faststream-messages",
        type=int,
        default=10_000,
        help="Fewer messages for FastStream (about 1,200 msg/s).",
    )
    parser.add_argument("--only", nargs="+", choices=sorted(CONTESTANTS), help="Run only these contestants.")
    parser.add_argument("--run-one", choices=sorted(CONTESTANTS), help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    args = parser.parse_args()
    conf = {"bootstrap.servers": args.bootstrap_servers}
    if args.run_one:
        CONTESTANTS[args.run_one](conf, args.topic, args.messages, f"{args.topic}-{args.run_one}-out")
        return

    names = list(args.only or CONTESTANTS)
    environments = {n: SHARED_ENVIRONMENT.get(n, n) for n in names}
    pythons = {
        n: str(ensure_environment(env)) if env in ENVIRONMENTS else sys.executable
        for n, env in environments.items()
    }
    topic = f"bench-in-{uuid.uuid4().hex[:8]}"
    print(f"producing {args.messages:,} messages to {topic} ...", flush=True)
    avg = produce_input(conf, topic, args.messages, args.partitions)
    rounds: list[dict[str, dict[str, Any]]] = []
    for number in range(args.rounds):
        shift = number % len(names)
        order = names[shift:] + names[:shift]  # each round starts with a different contestant
        results: dict[str, dict[str, Any]] = {}
        for name in order:
            n = min(args.messages, args.faststream_messages) if name == "faststream" else args.messages
            results[name] = row = run_contestant(name, pythons[name], topic, n, args.bootstrap_servers)
            shown = f"{row['rate']:,.0f} msg/s" if "rate" in row else row["note"]
            print(f"round {number + 1}/{args.rounds}  {name:<17} {shown}", flush=True)
        rounds.append(results)

    table = summarise(rounds, names)
    print()
    print(
        f"{args.messages:,} messages of ~{avg} B, {args.partitions} partitions, local broker, "
        f"at-least-once, {args.rounds} interleaved rounds"
        + (f" (faststream: {args.faststream_messages:,} messages)" if "faststream" in names else "")
    )
    print()
    print_table(table)
    print_goals(table)


if __name__ == "__main__":
    main()
