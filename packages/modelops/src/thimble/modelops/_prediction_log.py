"""Prediction records to Kafka, off the request path: a bounded buffer drained in batches on the event loop.

The records close the loop back into the warehouse: :func:`prediction_table_config` builds the
thimble-etl table config that loads one model's records from the topic into a typed Delta table.

The request path only appends a tuple to the buffer. A task on the same event loop wakes every
``interval_s``, serialises what is buffered (each model's inputs and outputs in one call) and hands the
records to librdkafka, which sends them from its own threads. Draining on the loop rather than in a Python
thread keeps the GIL with the requests: a busy thread would hold it for up to the interpreter's switch
interval (5 ms) at a time, which shows in the tail latency. When the buffer is full (Kafka down for long)
records are dropped and counted, never blocking a request.
"""

from __future__ import annotations

import asyncio
import re
import time
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from confluent_kafka import KafkaException, Producer

from thimble.common.logging import get_logger
from thimble.modelops.errors import ModelOpsError

if TYPE_CHECKING:
    from thimble.modelops.envelope import LoadedModel

log = get_logger(__name__)

# (request_id, model, version, time_ms, latency_ms, rows, outputs, dump_rows, dump_outputs)
Entry = tuple[str, str, int | None, int, float, Any, Any, Callable[[Any], Any], Callable[[Any], Any]]
MAX_RECORDS_PER_TURN = 512  # then the loop serves requests again before the next slice


class PredictionLog:
    """Produces one JSON record per request to ``topic``: request id, model version, inputs, outputs, latency."""

    def __init__(
        self,
        topic: str,
        kafka_config: dict[str, Any],
        max_queue: int = 100_000,
        on_drop: Callable[[int], None] | None = None,
        interval_s: float = 0.02,
    ) -> None:
        self.topic = topic
        conf = {
            "linger.ms": 20,
            "compression.type": "lz4",
            "queue.buffering.max.messages": max_queue,
            **kafka_config,
        }
        self._producer = Producer(conf, logger=get_logger("thimble.modelops.kafka"))
        self._max_queue = max_queue
        self._buffer: list[Entry] = []
        self._interval_s = interval_s
        self._on_drop = on_drop
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.sent = 0

    def put(self, entry: Entry) -> None:
        """Buffer a record; drop it (and count) when the buffer is full."""
        if len(self._buffer) >= self._max_queue:
            self._drop(1)
        else:
            self._buffer.append(entry)

    def start(self) -> None:
        """Start draining on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain_forever())

    async def _drain_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            while self._buffer and self._send(MAX_RECORDS_PER_TURN):
                await asyncio.sleep(0)
            self._producer.poll(0)

    def _send(self, limit: int) -> bool:
        """Serialise and produce up to ``limit`` buffered records; False when librdkafka's queue is full.

        What librdkafka cannot take yet stays buffered for the next wake-up.
        """
        batch, self._buffer = self._buffer[:limit], self._buffer[limit:]
        values = self._serialise(batch)
        for i, (entry, value) in enumerate(zip(batch, values, strict=True)):
            if value is None:
                continue
            try:
                self._producer.produce(self.topic, value, key=entry[0].encode())
                self.sent += 1
            except BufferError:
                self._buffer[:0] = batch[i:]
                self._trim()
                return False
            except KafkaException as exc:
                log.error("prediction record not produced", extra={"error": str(exc), "topic": self.topic})
                self._drop(1)
        return True

    def _serialise(self, batch: list[Entry]) -> list[bytes | None]:
        groups: dict[tuple[Callable[[Any], Any], Callable[[Any], Any]], list[int]] = {}
        for i, entry in enumerate(batch):
            groups.setdefault((entry[7], entry[8]), []).append(i)
        values: list[bytes | None] = [None] * len(batch)
        for (dump_rows, dump_outputs), members in groups.items():
            try:
                inputs = dump_rows([row for i in members for row in batch[i][5]])
                outputs = dump_outputs([out for i in members for out in batch[i][6]])
            except Exception as exc:
                log.error(
                    "prediction records not serialised", extra={"error": f"{type(exc).__name__}: {exc}"}
                )
                self._drop(len(members))
                continue
            start = 0
            for i in members:
                request_id, model, version, time_ms, latency_ms, rows = batch[i][:6]
                end = start + len(rows)
                values[i] = orjson.dumps(
                    {
                        "request_id": request_id,
                        "model": model,
                        "version": version,
                        "time": time_ms,
                        "latency_ms": round(latency_ms, 3),
                        "inputs": inputs[start:end],
                        "outputs": outputs[start:end],
                    },
                    option=orjson.OPT_SERIALIZE_NUMPY,
                )
                start = end
        return values

    def _trim(self) -> None:
        excess = len(self._buffer) - self._max_queue
        if excess > 0:
            del self._buffer[:excess]
            self._drop(excess)

    def _drop(self, n: int) -> None:
        self.dropped += n
        if self._on_drop is not None:
            self._on_drop(n)

    async def close(self, timeout: float = 10.0) -> None:
        """Send what is buffered (up to ``timeout`` seconds), then stop."""
        deadline = time.monotonic() + timeout
        if self._task is not None:
            self._task.cancel()
        while self._buffer and time.monotonic() < deadline:
            if not self._send(len(self._buffer)):
                await asyncio.to_thread(self._producer.poll, 0.1)
        if self._buffer:
            self._drop(len(self._buffer))
            self._buffer.clear()
        remaining = await asyncio.to_thread(self._producer.flush, max(0.0, deadline - time.monotonic()))
        if remaining:
            log.warning(
                "prediction records not delivered at shutdown",
                extra={"count": remaining, "topic": self.topic},
            )
        del self._producer  # stops librdkafka's threads (and its reconnect attempts) now


# --- the record format as a warehouse table ------------------------------------------------------------

RECORD_COLUMNS = {
    "request_id": "string",
    "model": "string",
    "version": "int",
    "time": "bigint",
    "latency_ms": "double",
}
_COLUMN_TYPES = (
    "bool, int, float, str, a Literal or Enum of those, X | None, list[X], dict[str, X] or a pydantic model"
)


def prediction_table_config(model: LoadedModel, topic: str, table: str | None = None) -> dict[str, Any]:
    """The thimble-etl table config loading ``model``'s prediction records from the Kafka ``topic``.

    Columns: ``request_id``, ``model``, ``version``, ``time`` (epoch ms), ``latency_ms``, ``inputs`` and
    ``outputs`` (``array<struct<...>>`` typed from the model's input and output models), plus
    ``predicted_at`` (timestamp) and ``prediction_date`` (date, the partition). Records of other models on
    the same topic are dropped in cleanse; a record without a request id goes to quarantine. Each run
    appends the records that arrived since the last one. ``table`` defaults to ``<model>_prediction_log``.
    Raises :class:`ModelOpsError` for a field type that has no Spark SQL column type, or a bad table name.
    """
    try:
        from thimble.etl.config import parse_table_config
    except ImportError:
        raise ModelOpsError(
            "a prediction table needs thimble-etl and Spark: pip install 'thimble-modelops[spark]'"
        ) from None
    from thimble.common.errors import ConfigError

    if not topic:
        raise ModelOpsError("give the Kafka topic the server logs predictions to")
    name = table or re.sub(r"[^A-Za-z0-9_]", "_", model.name) + "_prediction_log"
    columns = {
        **RECORD_COLUMNS,
        "inputs": f"array<{_struct_type(model.input_type, 'input')}>",
        "outputs": f"array<{_struct_type(model.output_type, 'output')}>",
    }
    config: dict[str, Any] = {
        "table": name,
        "description": f"Predictions served by model {model.name}, from the prediction log on {topic}.",
        "source": {"type": "kafka", "topic": topic, "starting_offsets": "earliest"},
        "schema": {"columns": columns},
        "cleanse": [
            {"step": "drop_where", "condition": f"model <> '{model.name}'"},
            {"step": "sql", "column": "predicted_at", "expression": "timestamp_millis(`time`)"},
            {"step": "sql", "column": "prediction_date", "expression": "to_date(predicted_at)"},
        ],
        "validate": [{"rule": "not_null", "columns": ["request_id", "time"]}],
        "quality": {
            "metrics": [{"metric": "row_count"}, {"metric": "mean", "column": "latency_ms"}],
        },
        "write": {"mode": "append", "partition_by": ["prediction_date"]},
    }
    try:
        parse_table_config(config)
    except ConfigError as exc:
        raise ModelOpsError(str(exc)) from None
    return config


def _struct_type(tp: type[Any], where: str) -> str:
    fields = []
    for field, info in tp.model_fields.items():
        path = f"{where}.{field}"
        name = field.replace("`", "``")
        fields.append(f"`{name}`:{_column_type(info.annotation, path)}")
    return f"struct<{','.join(fields)}>"


def _column_type(annotation: Any, where: str) -> str:
    """The Spark SQL type of a field: scalars as in batch scoring, containers and models nested."""
    from pydantic import BaseModel

    from thimble.modelops.batch import _scalar_type, _spark_type

    tp = _scalar_type(annotation)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (list, set, frozenset) and len(args) == 1:
        return f"array<{_column_type(args[0], f'{where}[]')}>"
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return f"array<{_column_type(args[0], f'{where}[]')}>"
    if origin is dict and len(args) == 2 and args[0] is str:
        return f"map<string,{_column_type(args[1], f'{where}[]')}>"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return _struct_type(tp, where)
    try:
        return _spark_type(annotation).simpleString()
    except ModelOpsError:
        raise ModelOpsError(
            f"{where}: {getattr(tp, '__name__', tp)} has no warehouse column type; use {_COLUMN_TYPES}"
        ) from None
