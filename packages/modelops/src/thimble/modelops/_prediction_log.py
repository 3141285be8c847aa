"""Prediction records to Kafka, off the request path: a bounded buffer drained in batches on the event loop.

The records close the loop back into the warehouse: :func:`prediction_table_config` builds the
thimble-etl table config that loads one model's records from the topic into a typed Delta table.

The request path only appends a tuple to the buffer. A task on the same event loop wakes every
``interval_s``, serialises what is buffered (each model's inputs and outputs in one call) and hands the
records to librdkafka, which sends them from its own threads. Draining on the loop rather than in a Python
thread keeps the GIL with the requests: a busy thread would hold it for up to the interpreter's switch
interval (5 ms) at a time, which shows in the tail latency.

No record is lost silently. What Kafka cannot take (its queue is full, or it gives up on a record after
``message.timeout.ms``, or shutdown comes first) is spilled to a bounded file under the run folder and
re-sent, also by the next process after a crash. While Kafka fails, only a small probe of spilled records
is sent, after a wait that doubles from ``retry_first_s`` up to ``retry_s``; once a record is delivered the
spill is read back a slice per turn, with at most ``resend_in_flight`` records in Kafka's queue. What still
cannot be kept (the spill file is full, the buffer overflows, the broker refuses a record as too large) is
counted by reason and logged, at most once per ``log_every_s``.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from thimble.common._paths import run_dir
from thimble.common.logging import get_logger
from thimble.modelops._column_types import struct_sql_type
from thimble.modelops._spill import Record, SpillFile
from thimble.modelops.errors import ModelOpsError

if TYPE_CHECKING:
    from thimble.modelops.envelope import LoadedModel

log = get_logger(__name__)

# (request_id, model, version, time_ms, latency_ms, rows, outputs, dump_rows, dump_outputs, alias, role)
Entry = tuple[
    str, str, int | None, int, float, Any, Any, Callable[[Any], Any], Callable[[Any], Any], str, str
]
MAX_RECORDS_PER_TURN = 512  # then the loop serves requests again before the next slice
RESEND_SLICES_PER_TURN = 8  # slices of spilled records handed to Kafka between two drains of the buffer
PROBE_RECORDS = 16  # spilled records sent to learn whether Kafka takes them again
# Refusals that no retry can cure: the record is dropped (and counted) rather than spilled forever.
_REFUSED = {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_RECORD, KafkaError.INVALID_MSG_SIZE}


def spill_folder(topic: str) -> Path:
    """Where undeliverable records of ``topic`` wait: ``<run dir>/modelops/prediction-spill/<topic>``."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", topic)
    if not name.strip("."):  # '', '.' and '..' would not name a folder of its own
        name = "_" * max(1, len(name))
    return run_dir() / "modelops" / "prediction-spill" / name


class _LossReport:
    """Logs undelivered records at most once per ``every_s``, with the counts since the last line."""

    def __init__(self, topic: str, every_s: float) -> None:
        self.topic = topic
        self.every_s = every_s
        self._last = 0.0
        self._counts: dict[str, int] = {}
        self._error = ""

    def add(self, what: str, n: int, error: str = "") -> None:
        self._counts[what] = self._counts.get(what, 0) + n
        self._error = error or self._error
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            counts, self._counts = self._counts, {}
            dropped = {k: v for k, v in counts.items() if k != "spilled"}
            (log.error if dropped else log.warning)(
                "prediction records not delivered to Kafka",
                extra={"topic": self.topic, "error": self._error, **counts},
            )


@dataclass
class _Claim:
    """A claimed spill file being re-sent: where reading goes on, how many of its lines are still unread
    (lost, and counted, if it cannot be read further) and how many read records are unsettled."""

    path: Path
    unread: int
    offset: int = 0
    at_end: bool = False
    unsettled: int = 0


class PredictionLog:
    """Produces one JSON record per request to ``topic``: request id, model version, inputs, outputs, latency."""

    def __init__(
        self,
        topic: str,
        kafka_config: dict[str, Any],
        max_queue: int = 100_000,
        on_drop: Callable[[int, str], None] | None = None,
        interval_s: float = 0.02,
        *,
        on_spill: Callable[[int], None] | None = None,
        on_resend: Callable[[int], None] | None = None,
        spill_dir: Path | None = None,
        spill_max_bytes: int = 256 * 1024 * 1024,
        retry_first_s: float = 1.0,
        retry_s: float = 30.0,
        resend_in_flight: int = 10_000,
        log_every_s: float = 10.0,
    ) -> None:
        self.topic = topic
        conf = {
            "linger.ms": 20,
            "compression.type": "lz4",
            "queue.buffering.max.messages": max_queue,
            # A large request makes a large record; it is compressed, and the broker's limit applies to that.
            "message.max.bytes": 32 * 1024 * 1024,
            **kafka_config,
        }
        self._producer = Producer(conf, logger=get_logger("thimble.modelops.kafka"))
        self._max_queue = max_queue
        self._buffer: list[Entry] = []
        self._interval_s = interval_s
        self._on_drop = on_drop
        self._on_spill = on_spill
        self._on_resend = on_resend
        self._spill = SpillFile(spill_dir or spill_folder(topic), spill_max_bytes)
        self._spill_waiting = False
        self._claims: list[_Claim] = []
        self._retry_first_s = min(retry_first_s, retry_s)
        self._retry_s = retry_s
        self._retry_delay = self._retry_first_s
        self._next_probe = 0.0
        self._probe_unsettled = 0
        self._resend_in_flight = resend_in_flight
        self._kafka_takes = False  # the last record settled was delivered; spilled ones are only probed
        self._report = _LossReport(topic, log_every_s)
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.sent = 0
        self.delivered = 0
        self.spilled = 0
        self.resent = 0

    def put(self, entry: Entry) -> None:
        """Buffer a record; drop it (and count) when the buffer is full."""
        if len(self._buffer) >= self._max_queue:
            self._drop(1, "queue_full")
        else:
            self._buffer.append(entry)

    def start(self) -> None:
        """Start draining on the running event loop (re-sending what an earlier process spilled)."""
        if self._task is None:
            self._spill_waiting = self._spill.pending()
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._drain_forever())
            loop.run_in_executor(None, self._check_topic)

    def _check_topic(self) -> None:
        """Say at start, in one line, when the topic is missing or Kafka cannot be reached."""
        try:
            topic = self._producer.list_topics(self.topic, timeout=5).topics.get(self.topic)
        except (KafkaException, RuntimeError) as exc:
            log.warning(
                "Kafka cannot be reached: prediction records are spilled until it can",
                extra={"topic": self.topic, "error": str(exc), "spill": str(self._spill.folder)},
            )
            return
        if topic is None or topic.error is not None:
            log.warning(
                "the prediction log topic does not exist: records are spilled until it does",
                extra={
                    "topic": self.topic,
                    "error": topic.error.str() if topic is not None and topic.error else "",
                    "spill": str(self._spill.folder),
                },
            )

    async def _drain_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            # What arrives while a backlog is sent waits for the next drain: sending each new record on
            # its own turn would cost a serialisation call per request under steady load.
            backlog = len(self._buffer)
            while backlog > 0 and self._send(MAX_RECORDS_PER_TURN):
                backlog -= MAX_RECORDS_PER_TURN
                await asyncio.sleep(0)
            self._producer.poll(0)
            for _ in range(RESEND_SLICES_PER_TURN):
                if not self._resend(time.monotonic()):
                    break
                await asyncio.sleep(0)

    def _send(self, limit: int) -> bool:
        """Serialise and produce up to ``limit`` buffered records; False when librdkafka's queue is full.

        What librdkafka cannot take is spilled.
        """
        batch, self._buffer = self._buffer[:limit], self._buffer[limit:]
        values = self._serialise(batch)
        delivered = self._delivered  # bound once: a bound method made per record costs close to a microsecond
        for i, (entry, value) in enumerate(zip(batch, values, strict=True)):
            if value is None:
                continue
            key = entry[0].encode()
            try:
                self._producer.produce(self.topic, value, key=key, on_delivery=delivered)
                self.sent += 1
            except BufferError:
                rest = [
                    (e[0].encode(), v) for e, v in zip(batch[i:], values[i:], strict=True) if v is not None
                ]
                self._spill_records(rest, "Kafka's local queue is full")
                return False
            except KafkaException as exc:
                self._failed([(key, value)], exc.args[0])
        return True

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered += 1
            self._kafka_takes = True
            self._retry_delay = self._retry_first_s
            return
        value = msg.value()
        if value is not None:
            self._failed([(msg.key(), value)], err)

    def _failed(self, records: Sequence[Record], err: KafkaError) -> None:
        if err.code() in _REFUSED:
            hint = " (the topic's max.message.bytes)" if err.code() == KafkaError.MSG_SIZE_TOO_LARGE else ""
            self._drop(len(records), "refused", err.str() + hint)
            return
        if self._kafka_takes:
            self._kafka_takes = False
            self._next_probe = time.monotonic() + self._retry_delay
        self._spill_records(records, err.str())

    def _spill_records(self, records: Sequence[Record], error: str) -> None:
        try:
            kept = self._spill.write(records)
        except OSError as exc:
            self._drop(len(records), "spill_failed", f"{error}; spill file: {exc}")
            return
        if kept:
            self._spill_waiting = True
            self.spilled += kept
            if self._on_spill is not None:
                self._on_spill(kept)
            self._report.add("spilled", kept, error)
        if kept < len(records):
            self._drop(len(records) - kept, "spill_full", error)

    def _resend(self, now: float) -> bool:
        """Hand a slice of spilled records to Kafka again; False when there is nothing more to do this turn.

        While Kafka fails, a slice is a probe of a few records, sent once the last probe has settled and
        the back-off has passed.
        """
        if self._kafka_takes:
            limit = min(MAX_RECORDS_PER_TURN, self._resend_in_flight - len(self._producer))
        elif self._probe_unsettled == 0 and now >= self._next_probe:
            limit = PROBE_RECORDS
        else:
            return False
        if limit <= 0:
            return False
        claim = next((c for c in self._claims if not c.at_end), None)
        if claim is None:
            if not self._spill_waiting:
                return False
            self._spill_waiting = False
            for path in self._spill.claim():
                try:
                    self._claims.append(_Claim(path, self._spill.lines(path)))
                except OSError as exc:  # removed before it could be counted: its records cannot be known
                    self._spill.done(path)
                    self._lost_file(path, exc)
            claim = next((c for c in self._claims if not c.at_end), None)
            if claim is None:
                return False
        unreadable = self._spill.unreadable
        try:
            records, claim.offset, claim.at_end = self._spill.read(claim.path, claim.offset, limit)
        except OSError as exc:  # removed or unreadable under the server: what it held cannot be re-sent
            self._claims.remove(claim)
            self._spill.done(claim.path)
            self._lost_file(claim.path, exc, claim.unread)
            return True
        claim.unread = max(0, claim.unread - len(records) - (self._spill.unreadable - unreadable))
        if self._spill.unreadable:
            lost, self._spill.unreadable = self._spill.unreadable, 0
            self._drop(
                lost,
                "spill_unreadable",
                f"a spill file under {self._spill.folder} holds lines that are not records",
            )
        probe = not self._kafka_takes
        claim.unsettled += len(records)
        if probe:
            self._probe_unsettled += len(records)

        def settled(err: KafkaError | None, msg: Message) -> None:
            self._delivered(err, msg)
            self._settle(claim, 1, probe)

        for n, (key, value) in enumerate(records):
            try:
                self._producer.produce(self.topic, value, key=key, on_delivery=settled)
            except BufferError:
                self._spill_records(records[n:], "Kafka's local queue is full")
                self._settle(claim, len(records) - n, probe)
                return False
            except KafkaException as exc:
                self._failed([(key, value)], exc.args[0])
                self._settle(claim, 1, probe)
                continue
            self.resent += 1
            if self._on_resend is not None:
                self._on_resend(1)
        self._settle(claim, 0, probe)
        return not probe

    def _lost_file(self, path: Path, exc: OSError, records: int = 0) -> None:
        """A claimed spill file that cannot be read further: its ``records`` unread lines are dropped."""
        log.error(
            "a spill file of prediction records could not be read; the records it still held are lost",
            extra={"topic": self.topic, "path": str(path), "error": str(exc), "records": records},
        )
        if records:
            self._drop(records, "spill_unreadable", f"spill file {path}: {exc}")

    def _settle(self, claim: _Claim, n: int, probe: bool) -> None:
        claim.unsettled -= n
        if probe and n:
            self._probe_unsettled -= n
            if self._probe_unsettled == 0 and not self._kafka_takes:
                self._next_probe = time.monotonic() + self._retry_delay
                self._retry_delay = min(self._retry_delay * 2, self._retry_s)
        if claim.at_end and claim.unsettled == 0 and claim in self._claims:
            self._claims.remove(claim)
            self._spill.done(claim.path)

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
                self._drop(len(members), "unserialisable", f"{type(exc).__name__}: {exc}")
                continue
            start = 0
            for i in members:
                request_id, model, version, time_ms, latency_ms, rows = batch[i][:6]
                alias, role = batch[i][9], batch[i][10]
                end = start + len(rows)
                values[i] = orjson.dumps(
                    {
                        "request_id": request_id,
                        "model": model,
                        "version": version,
                        "alias": alias,
                        "role": role,
                        "time": time_ms,
                        "latency_ms": round(latency_ms, 3),
                        "inputs": inputs[start:end],
                        "outputs": outputs[start:end],
                    },
                    option=orjson.OPT_SERIALIZE_NUMPY,
                )
                start = end
        return values

    def _drop(self, n: int, reason: str, error: str = "") -> None:
        self.dropped += n
        if self._on_drop is not None:
            self._on_drop(n, reason)
        self._report.add(f"dropped_{reason}", n, error)

    async def close(self, timeout: float = 10.0) -> None:
        """Send what is buffered (up to ``timeout`` seconds); spill what Kafka has not taken by then."""
        deadline = time.monotonic() + timeout
        if self._task is not None:
            self._task.cancel()
        while self._buffer and time.monotonic() < deadline:
            if not self._send(len(self._buffer)):
                await asyncio.to_thread(self._producer.poll, 0.1)
        if self._buffer:
            batch, self._buffer = self._buffer, []
            values = self._serialise(batch)
            self._spill_records(
                [(e[0].encode(), v) for e, v in zip(batch, values, strict=True) if v is not None],
                "shutdown before Kafka took them",
            )
        await asyncio.to_thread(self._producer.flush, max(0.0, deadline - time.monotonic()))
        if len(self._producer):
            self._producer.purge()  # what is still queued comes back through the delivery callback
            self._producer.poll(0)
        for claim in self._claims:
            # A claim with records still unsettled stays whole, to be re-sent from its start (at least once).
            if claim.unsettled == 0:
                try:
                    self._spill.put_back(claim.path, claim.offset)
                except OSError as exc:
                    self._lost_file(claim.path, exc, claim.unread)
        self._claims.clear()
        self._spill.close()
        del self._producer  # stops librdkafka's threads (and its reconnect attempts) now


# --- the record format as a warehouse table ------------------------------------------------------------

RECORD_COLUMNS = {
    "request_id": "string",
    "model": "string",
    "version": "int",
    "alias": "string",
    "role": "string",
    "time": "bigint",
    "latency_ms": "double",
}


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
        "inputs": f"array<{struct_sql_type(model.input_type, 'input')}>",
        "outputs": f"array<{struct_sql_type(model.output_type, 'output')}>",
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
