"""The landing sink: Parquet files partitioned by the event's UTC date, each made visible atomically.

Contract (read by thimble-etl): ``{landing}/{dataset}/date=YYYY-MM-DD/part-<timestamp>-<uuid>.parquet``,
one row per output with the output's fields (datetimes as UTC timestamps) plus ``_kafka_topic``,
``_kafka_partition``, ``_kafka_offset`` and ``_landed_at``. A file is written under a hidden name
(``.part-...``, which Spark ignores), fsynced, then renamed with ``os.replace``.
"""

from __future__ import annotations

import os
import time
import types
import typing
import uuid
from datetime import UTC, date, datetime, timedelta
from datetime import time as time_of_day
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID

import orjson
from pydantic import BaseModel

from thimble.common.features import landing_folder
from thimble.consumer._codec import epoch_ms, record_fields
from thimble.consumer._delivery import Pending
from thimble.consumer._writers import unwrap
from thimble.consumer.errors import SinkError
from thimble.consumer.sinks import Landing

META_COLUMNS = ("_kafka_topic", "_kafka_partition", "_kafka_offset", "_landed_at")

Row = dict[str, Any]


class LandingStore(Protocol):
    def warm_up(self) -> None:
        """Load what writing needs, before the first write."""

    def write(self, dataset: str, day: str, rows: list[Row], model: type[BaseModel] | None) -> str: ...


def _column_type(annotation: Any) -> Any:
    """The Python type of a model field's Parquet column, or ``None``: the field is stored as JSON text."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _column_type(args[0]) if len(args) == 1 else None
    return annotation if annotation in (bool, int, float, str, bytes, datetime, date) else None


def _json_fields(model: type[BaseModel]) -> set[str]:
    """A model's fields stored as JSON strings (without loading pyarrow)."""
    return {name for name, info in model.model_fields.items() if _column_type(info.annotation) is None}


def _arrow_type(annotation: Any) -> Any:
    import pyarrow as pa

    simple = _column_type(annotation)
    if simple is None:
        return None  # stored as a JSON string
    return {
        bool: pa.bool_(),
        int: pa.int64(),
        float: pa.float64(),
        str: pa.string(),
        bytes: pa.binary(),
        datetime: pa.timestamp("us", tz="UTC"),
        date: pa.date32(),
    }[simple]


def arrow_schema(model: type[BaseModel]) -> tuple[Any, set[str]]:
    """The Parquet schema of a model's rows, and the fields stored as JSON strings."""
    import pyarrow as pa

    fields, as_json = [], set()
    for name, info in model.model_fields.items():
        arrow = _arrow_type(info.annotation)
        if arrow is None:
            arrow = pa.string()
            as_json.add(name)
        fields.append(pa.field(name, arrow))
    fields += [
        pa.field("_kafka_topic", pa.string()),
        pa.field("_kafka_partition", pa.int32()),
        pa.field("_kafka_offset", pa.int64()),
        pa.field("_landed_at", pa.timestamp("us", tz="UTC")),
    ]
    return pa.schema(fields), as_json


class ParquetFiles:
    """Writes each batch of one date as one Parquet file, atomically."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._schemas: dict[type[BaseModel], tuple[Any, set[str]]] = {}

    def warm_up(self) -> None:
        # pyarrow loads its pandas layer on first use (1-3 s on a busy machine). Paid here, at start,
        # it is not paid by the first flush, which holds the pipeline lock (delaying a rebalance or a drain).
        import pyarrow as pa
        import pyarrow.parquet

        pa.Table.from_pylist([{"ready": 1}])

    def write(self, dataset: str, day: str, rows: list[Row], model: type[BaseModel] | None) -> str:
        import pyarrow as pa
        import pyarrow.parquet as pq

        folder = Path(landing_folder(str(self.root), dataset, day))
        folder.mkdir(parents=True, exist_ok=True)
        if model is not None:
            if model not in self._schemas:
                self._schemas[model] = arrow_schema(model)
            schema, as_json = self._schemas[model]
            if as_json:
                rows = [{**r, **{k: orjson.dumps(r[k]).decode() for k in as_json if k in r}} for r in rows]
            table = pa.Table.from_pylist(rows, schema=schema)
        else:  # every field of every row, not only the first row's (pyarrow's inference)
            columns = dict.fromkeys(name for row in rows for name in row)
            table = pa.Table.from_pydict({name: [row.get(name) for row in rows] for name in columns})
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        name = f"part-{stamp}-{uuid.uuid4().hex}.parquet"
        temp = folder / f".{name}.tmp"
        try:
            with open(temp, "wb") as handle:
                pq.write_table(table, handle, compression="zstd")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, folder / name)
        finally:
            if temp.exists():
                temp.unlink()
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return str(folder / name)


_INT64 = (-(2**63), 2**63 - 1)
# Values pyarrow writes as they are, beside bool, numbers, dicts and lists (in this order: a datetime is a date).
_SCALARS: tuple[type, ...] = (str, bytes, datetime, date, time_of_day, timedelta, Decimal, UUID)
Shape = Any  # None (unknown yet), a kind name, ("list", Shape) or ("dict", {name: Shape})


def _shape(value: Any) -> Shape:
    """What a Parquet column needs of ``value``; ``ValueError`` for a value no column can hold."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise ValueError(f"{value} does not fit a 64-bit integer")
        return "number"
    if isinstance(value, float):
        return "number"
    for kind in _SCALARS:  # a str enum is a str; a datetime, not a date
        if isinstance(value, kind):
            return kind.__name__
    if isinstance(value, dict):
        return ("dict", {str(k): _shape(v) for k, v in value.items()})
    if isinstance(value, list | tuple | set):
        item: Shape = None
        for element in value:
            item = _merge(item, _shape(element))
        return ("list", item)
    raise ValueError(f"a {type(value).__name__} cannot be a Parquet column; convert it (to str, for one)")


def _merge(known: Shape, new: Shape) -> Shape:
    """The shape of a column holding values of both shapes; ``ValueError`` when none can."""
    if known is None or known == new:
        return new if known is None else known
    if new is None:
        return known
    if isinstance(known, tuple) and isinstance(new, tuple) and known[0] == new[0]:
        if known[0] == "list":
            return ("list", _merge(known[1], new[1]))
        fields = dict(known[1])
        for name, shape in new[1].items():
            fields[name] = _merge(fields.get(name), shape)
        return ("dict", fields)
    raise ValueError(f"{_kind(new)} where earlier rows hold {_kind(known)}; a field keeps one type")


def _kind(shape: Shape) -> str:
    return shape[0] if isinstance(shape, tuple) else str(shape)


class MemoryLanding:
    """Landed rows kept in memory (the test harness)."""

    def __init__(self) -> None:
        self.rows: dict[str, list[Row]] = {}

    def warm_up(self) -> None:
        return

    def write(self, dataset: str, day: str, rows: list[Row], model: type[BaseModel] | None) -> str:
        self.rows.setdefault(dataset, []).extend({**r, "date": day} for r in rows)
        return f"memory://{dataset}/date={day}"


class LandingWriter:
    """Buffers rows by date; writes a file per date every ``batch_rows`` rows or ``flush_interval_s``."""

    def __init__(self, spec: Landing, store: LandingStore, batch_rows: int, flush_interval_s: float) -> None:
        self.label = spec.dataset
        self.spec = spec
        self.store = store
        self.batch_rows = spec.batch_rows or batch_rows
        self.flush_interval_s = spec.flush_interval_s or flush_interval_s
        self._rows: dict[str, list[Row]] = {}
        self._pending: list[Pending] = []
        self._count = 0
        self._since = 0.0
        self._model: type[BaseModel] | None = None
        # Each field's shape over the rows landed so far: a row that would not fit one Parquet column
        # with them is refused in prepare (its input alone dead-lettered), never at the flush, where it
        # would fail the whole file and stop the consumer on every restart.
        self._shapes: dict[str, Shape] = {}
        self._as_json: set[str] = set()  # a model's fields landed as JSON text: any shape, row by row
        store.warm_up()

    def prepare(self, output: Any, msg: Any) -> tuple[str, Row]:
        value = unwrap(output)[0]
        if isinstance(value, BaseModel) and type(value) is not self._model:
            self._model = type(value)
            self._as_json = _json_fields(self._model)
        fields = record_fields(value)
        self._check_shapes(fields)
        if self.spec.event_time is not None:
            if self.spec.event_time not in fields:
                raise KeyError(f"output has no field {self.spec.event_time!r} (the Landing event_time)")
            event_ms = epoch_ms(fields[self.spec.event_time])
        else:
            event_ms = msg.timestamp()[1]
        day = datetime.fromtimestamp(event_ms / 1000, UTC).date().isoformat()  # years below 1000 too
        fields["_kafka_topic"] = msg.topic()
        fields["_kafka_partition"] = msg.partition()
        fields["_kafka_offset"] = msg.offset()
        return day, fields

    def _check_shapes(self, fields: Row) -> None:
        merged: dict[str, Shape] = {}
        for name, value in fields.items():
            try:
                if name in self._as_json:  # a model's field landed as JSON text: it must encode
                    orjson.dumps(value)
                else:
                    merged[name] = _merge(self._shapes.get(name), _shape(value))
            except (ValueError, TypeError) as exc:  # orjson.JSONEncodeError is a TypeError
                raise ValueError(f"Landing {self.label!r}: field {name!r}: {exc}") from None
        self._shapes.update(merged)  # only once the whole row fits

    def write(self, prepared: tuple[str, Row], pending: Pending) -> None:
        day, row = prepared
        pending.hold()
        if not self._count:
            self._since = time.monotonic()
        self._rows.setdefault(day, []).append(row)
        self._pending.append(pending)
        self._count += 1
        if self._count >= self.batch_rows:
            self.flush(0)

    def end_batch(self) -> None:
        self.tick()

    def tick(self) -> None:
        if self._count and time.monotonic() - self._since >= self.flush_interval_s:
            self.flush(0)

    def flush(self, timeout: float) -> None:
        if not self._count:
            return
        rows, pending = self._rows, self._pending
        self._rows, self._pending, self._count = {}, [], 0
        landed_at = datetime.now(UTC)
        try:
            for day, day_rows in sorted(rows.items()):
                for row in day_rows:
                    row["_landed_at"] = landed_at
                self.store.write(self.spec.dataset, day, day_rows, self._model)
        except Exception as exc:
            error = SinkError(f"landing {self.label!r}: {type(exc).__name__}: {exc}")
            for p in pending:
                p.fail(error)
            return
        for p in pending:
            p.release()

    def close(self) -> None:
        return
