"""Prediction records to Kafka, off the request path: a bounded queue drained by one thread.

The request path only puts a tuple on the queue; serialisation and producing happen in the thread.
When the queue is full (Kafka down for long) records are dropped and counted, never blocking a request.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import KafkaException, Producer

from thimble.common.logging import get_logger

log = get_logger(__name__)

# (request_id, model, version, time_ms, latency_ms, rows, outputs, dump_rows, dump_outputs)
Entry = tuple[str, str, int | None, int, float, Any, Any, Callable[[Any], Any], Callable[[Any], Any]]


class PredictionLog:
    """Produces one JSON record per request to ``topic``: request id, model version, inputs, outputs, latency."""

    def __init__(
        self,
        topic: str,
        kafka_config: dict[str, Any],
        max_queue: int = 100_000,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        self.topic = topic
        conf = {
            "linger.ms": 20,
            "compression.type": "lz4",
            "queue.buffering.max.messages": max_queue,
            **kafka_config,
        }
        self._producer = Producer(conf, logger=get_logger("thimble.modelops.kafka"))
        self._queue: queue.Queue[Entry] = queue.Queue(max_queue)
        self._stop = threading.Event()
        self._on_drop = on_drop
        self.dropped = 0
        self.sent = 0
        self._thread = threading.Thread(target=self._drain, name="thimble-prediction-log", daemon=True)
        self._thread.start()

    def put(self, entry: Entry) -> None:
        """Queue a record; drop it (and count) when the queue is full."""
        try:
            self._queue.put_nowait(entry)
        except queue.Full:
            self.dropped += 1
            if self._on_drop is not None:
                self._on_drop(1)

    def _produce(self, entry: Entry) -> None:
        request_id, model, version, time_ms, latency_ms, rows, outputs, dump_rows, dump_outputs = entry
        value = orjson.dumps(
            {
                "request_id": request_id,
                "model": model,
                "version": version,
                "time": time_ms,
                "latency_ms": round(latency_ms, 3),
                "inputs": dump_rows(rows),
                "outputs": dump_outputs(outputs),
            },
            option=orjson.OPT_SERIALIZE_NUMPY,
        )
        while True:
            try:
                self._producer.produce(self.topic, value, key=request_id.encode())
                self.sent += 1
                return
            except BufferError:
                if self._stop.is_set():
                    self.dropped += 1
                    return
                self._producer.poll(0.1)
            except KafkaException as exc:
                log.error("prediction record not produced", extra={"error": str(exc), "topic": self.topic})
                self.dropped += 1
                return

    def _drain(self) -> None:
        while True:
            try:
                entry = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set():
                    break
                self._producer.poll(0)
                continue
            try:
                self._produce(entry)
            except Exception as exc:
                log.error("prediction record not serialised", extra={"error": f"{type(exc).__name__}: {exc}"})
                self.dropped += 1
            self._producer.poll(0)

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued (up to ``timeout`` seconds), then stop."""
        deadline = time.monotonic() + timeout
        self._stop.set()
        self._thread.join(timeout + 1.0)
        remaining = self._producer.flush(max(0.0, deadline - time.monotonic()))
        if remaining:
            log.warning(
                "prediction records not delivered at shutdown",
                extra={"count": remaining, "topic": self.topic},
            )
        del self._producer  # stops librdkafka's threads (and its reconnect attempts) now
