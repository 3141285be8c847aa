"""What the framework itself costs per message, measured where a shared machine's noise cannot hide it.

``bench_throughput.py`` runs each contestant in its own process, one after another; on a shared
machine the speed of the CPU moves by tens of percent from one second to the next, so a gap of 10% is
hard to see there. Here both paths run in one process on the same real messages (read once from the
local broker) and produce to the same real topic, alternating in short rounds; the table shows each
path's thread CPU time per message and, round by round, the difference, whose median is the framework's
cost:

- handwritten: the hand-written loop of ``bench_throughput.py`` (decode + pydantic validate, the
  handler, encode, produce with a delivery callback, the last offset of each partition)
- thimble:     the same handler through the consumer's pipeline, as its worker thread runs it
  (``Pipeline.feed`` per message, what is complete taken every 128 messages, the end of each polled
  batch); polling, the queue between the threads and storing offsets are not part of it

A round ends once every output it sent is acknowledged: the delivery reports served until then are
part of the path's time.

In the same rounds, each step of the hand-written loop runs alone over the same messages, with the
garbage collector left alone as the consumer's runner leaves it: what the job itself costs per message
with no framework at all, the floor under any handler of it, per message or batch (validating a batch
in one call joins its records into one JSON array, which only a loop that trusts its input can do).

    .venv/bin/python packages/consumer/benchmarks/bench_overhead.py --messages 10000 --rounds 40
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parents[1] / "src"))

import bench_throughput as workload  # noqa: E402
from confluent_kafka import Consumer, Producer  # noqa: E402
from confluent_kafka.admin import AdminClient  # noqa: E402
from confluent_kafka.cimpl import NewTopic  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402
from pydantic import TypeAdapter  # noqa: E402

from thimble.common.config import load_settings  # noqa: E402
from thimble.consumer import App, ConsumerSettings  # noqa: E402
from thimble.consumer import _log_context as log_context  # noqa: E402
from thimble.consumer._collector import tuned_for  # noqa: E402
from thimble.consumer._kafka import producer_config  # noqa: E402
from thimble.consumer._landing import ParquetFiles  # noqa: E402
from thimble.consumer._metrics import ConsumerMetrics  # noqa: E402
from thimble.consumer._pipeline import Backends, Pipeline  # noqa: E402
from thimble.consumer._runner import STORE_EVERY  # noqa: E402
from thimble.consumer._transport import KafkaTransport  # noqa: E402

POLLED_BATCH = 500


def read_messages(conf: dict[str, Any], topic: str, n: int) -> list[list[Any]]:
    """``n`` messages of ``topic``, in polled batches."""
    consumer = Consumer(
        {**conf, "group.id": f"bench-overhead-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    batches: list[list[Any]] = []
    seen = 0
    while seen < n:
        batch = [m for m in consumer.consume(min(POLLED_BATCH, n - seen), 1.0) if m.error() is None]
        if batch:
            batches.append(batch)
            seen += len(batch)
    consumer.close()
    return batches


def handwritten(batches: list[list[Any]], producer: Producer, out: str) -> Callable[[], None]:
    validate = workload.ClientEvent.model_validate_json
    featurize, features_cls = workload.featurize, workload.ClientFeatures

    def run() -> None:
        for batch in batches:
            remaining = [0]
            last: dict[tuple[str, int], int] = {}

            def ack(err: Any, _msg: Any, remaining: list[int] = remaining) -> None:
                remaining[0] -= 1

            for msg in batch:
                if msg.error() is not None:
                    continue
                value = featurize(validate(msg.value()), features_cls)
                remaining[0] += 1
                producer.produce(
                    out, value.__pydantic_serializer__.to_json(value), msg.key(), on_delivery=ack
                )
                last[(msg.topic(), msg.partition())] = msg.offset()
            producer.poll(0)

    return run


def steps(batches: list[list[Any]], producer: Producer, out: str) -> dict[str, Callable[[], None]]:
    """Each step of the hand-written loop alone, over every batch."""
    validate = workload.ClientEvent.__pydantic_validator__.validate_json
    validate_batch = TypeAdapter(list[workload.ClientEvent]).validate_json
    featurize, features_cls = workload.featurize, workload.ClientFeatures
    to_json = features_cls.__pydantic_serializer__.to_json
    values = [[msg.value() for msg in batch] for batch in batches]
    events = [[validate(value) for value in batch] for batch in values]
    features = [[featurize(event, features_cls) for event in batch] for batch in events]
    encoded = [[to_json(feature) for feature in batch] for batch in features]

    def validate_each() -> None:
        for batch in values:
            [validate(value) for value in batch]

    def validate_joined() -> None:
        for batch in values:
            validate_batch(b"[" + b",".join(batch) + b"]")

    def handler() -> None:
        for batch in events:
            [featurize(event, features_cls) for event in batch]

    def encode() -> None:
        for batch in features:
            [to_json(feature) for feature in batch]

    def produce() -> None:
        for batch in encoded:
            remaining = [len(batch)]

            def ack(err: Any, _msg: Any, remaining: list[int] = remaining) -> None:
                remaining[0] -= 1

            for value in batch:
                producer.produce(out, value, None, on_delivery=ack)
            producer.poll(0)

    def fastest(step: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            with tuned_for(POLLED_BATCH):  # the collector left alone, as the consumer's runner does
                step()

        return run

    return {
        "validate, one call each": fastest(validate_each),
        "validate, one per batch": fastest(validate_joined),
        "the handler": fastest(handler),
        "encode (to_json)": fastest(encode),
        "produce + delivery report": fastest(produce),
    }


def thimble(batches: list[list[Any]], pipeline: Pipeline, producer: Producer) -> Callable[[], None]:
    current = log_context.current

    def run() -> None:
        feed = pipeline.feed
        for batch in batches:
            for i, msg in enumerate(batch, 1):
                current.msg = msg
                feed(msg)
                if not i % STORE_EVERY:
                    producer.poll(0)
                    pipeline.completed()
            current.msg = None
            pipeline.end_batch()
            pipeline.tick()
            producer.poll(0)
            pipeline.completed()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=10_000, help="Messages per round.")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--bootstrap-servers", default="127.0.0.1:9092")
    args = parser.parse_args()
    conf = {"bootstrap.servers": args.bootstrap_servers}

    source = f"bench-overhead-in-{uuid.uuid4().hex[:8]}"
    out = f"{source}-out"
    size = workload.produce_input(conf, source, args.messages, 3)
    admin = AdminClient(conf)
    admin.create_topics([NewTopic(out, 3, 1)])[out].result(30)
    batches = read_messages(conf, source, args.messages)

    settings = load_settings(
        ConsumerSettings,
        overrides={"kafka": {"bootstrap_servers": args.bootstrap_servers}, "metrics": {"enabled": False}},
    )
    producer = Producer(producer_config(settings, "bench-overhead"))
    app = App("bench-overhead")

    @app.handler(source=source, sink=out)
    def handle(event: workload.ClientEvent) -> workload.ClientFeatures:
        return workload.featurize(event, workload.ClientFeatures)

    pipeline = Pipeline(
        app,
        settings,
        Backends(
            KafkaTransport(producer),
            lambda: None,  # type: ignore[arg-type,return-value]  # no online store sink
            ParquetFiles(settings.warehouse.landing),
        ),
        ConsumerMetrics(CollectorRegistry()),
        lambda _s: False,
    )
    paths = {
        "handwritten": handwritten(batches, producer, out),
        "thimble": thimble(batches, pipeline, producer),
        **steps(batches, producer, out),
    }
    cpu: dict[str, list[float]] = {name: [] for name in paths}
    for number in range(args.rounds):
        shift = number % len(paths)
        order = list(paths)[shift:] + list(paths)[:shift]
        for name in order:
            started = time.thread_time()
            paths[name]()
            # Every output acknowledged before the next path runs; the delivery reports this serves are
            # the path's own cost, and so is (for thimble) taking what they completed.
            producer.flush(30)
            if name == "thimble":
                pipeline.completed()
            cpu[name].append((time.thread_time() - started) / args.messages * 1e6)
    admin.delete_topics([source, out])

    differences = [t - h for t, h in zip(cpu["thimble"], cpu["handwritten"], strict=True)]
    median = {name: statistics.median(values) for name, values in cpu.items()}
    floor = min(median["validate, one call each"], median["validate, one per batch"]) + sum(
        median[name] for name in ("the handler", "encode (to_json)", "produce + delivery report")
    )
    print(
        f"{args.messages:,} messages of ~{size} B per round, {args.rounds} rounds alternating, "
        "thread CPU time per message"
    )
    print()
    print(f"| {'path':<25} | {'median':>9} | {'spread':>15} |")
    print(f"|{'-' * 27}|{'-' * 11}|{'-' * 17}|")
    for name, values in cpu.items():
        print(f"| {name:<25} | {median[name]:>6.2f} µs | {_spread(values):>15} |")
        if name == "thimble":
            print(
                f"| {'thimble - handwritten':<25} | {statistics.median(differences):>6.2f} µs "
                f"| {_spread(differences):>15} |"
            )
    share = statistics.median(differences) / median["handwritten"]
    print()
    print(f"the framework's own cost: {share:+.0%} of the hand-written loop's CPU time per message")
    print(
        f"the job's own steps (the faster validation): {floor:.2f} µs per message; one thread does at "
        f"most {1e6 / floor:,.0f} msg/s of them, with no polling, offsets or framework"
    )


def _spread(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f} µs"


if __name__ == "__main__":
    main()
