"""The landing sink: Parquet files partitioned by the event's UTC date, each made visible atomically.

Contract (read by thimble-etl): ``{landing}/{dataset}/date=YYYY-MM-DD/part-<timestamp>-<uuid>.parquet``,
one row per output with the output's fields (datetimes as UTC timestamps; a model's ``extra="allow"``
fields too, typed as a dict output's are) plus ``_kafka_topic``,
``_kafka_partition``, ``_kafka_offset`` and ``_landed_at``; an output with a field named like one of
these or the partition column ``date`` (in any case) is refused (:mod:`._landing_columns`). A file is
written under a hidden name (``.part-...``, which Spark ignores), fsynced, then renamed with
``os.replace``.
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

from thimble.common.features import LANDING_PARTITION, landing_folder
from thimble.common.logging import get_logger
from thimble.common.text import cut
from thimble.consumer._codec import epoch_ms, record_fields
from thimble.consumer._delivery import Pending
from thimble.consumer._landing_columns import META_COLUMNS, landed_names, refusal
from thimble.consumer._writers import unwrap
from thimble.consumer.errors import SinkError
from thimble.consumer.sinks import Landing

log = get_logger(__name__)

Row = dict[str, Any]


class LandingStore(Protocol):
    def warm_up(self) -> None:
        """Load what writing needs, before the first write."""

    def field_types(self, dataset: str) -> FieldTypes:
        """The dataset's field types, shared by its writers: on first use, those of its existing files."""

    def write(self, dataset: str, day: str, rows: list[Row], model: type[BaseModel] | None) -> str: ...


def _column_type(annotation: Any) -> Any:
    """The Python type of a model field's Parquet column, or ``None``: the field is stored as JSON text."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _column_type(args[0]) if len(args) == 1 else None
    return annotation if annotation in (bool, int, float, str, bytes, datetime, date) else None


def _columns(model: type[BaseModel]) -> list[tuple[str, Any]]:
    """Each model field's column (the name its rows carry: its alias when the model dumps by alias)
    and annotation."""
    names = landed_names(model) or {}
    return [(names[name], info.annotation) for name, info in model.model_fields.items()]


def _json_fields(model: type[BaseModel]) -> set[str]:
    """A model's columns stored as JSON strings (without loading pyarrow)."""
    return {column for column, annotation in _columns(model) if _column_type(annotation) is None}


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
    for name, annotation in _columns(model):
        arrow = _arrow_type(annotation)
        if arrow is None:
            arrow = pa.string()
            as_json.add(name)
        fields.append(pa.field(name, arrow))
    return pa.schema(fields + _meta_fields()), as_json


def _meta_fields() -> list[Any]:
    import pyarrow as pa

    return [
        pa.field("_kafka_topic", pa.string()),
        pa.field("_kafka_partition", pa.int32()),
        pa.field("_kafka_offset", pa.int64()),
        pa.field("_landed_at", pa.timestamp("us", tz="UTC")),
    ]


class ParquetFiles:
    """Writes each batch of one date as one Parquet file, atomically."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._schemas: dict[type[BaseModel], tuple[Any, set[str]]] = {}
        self._types: dict[str, FieldTypes] = {}

    def field_types(self, dataset: str) -> FieldTypes:
        if dataset not in self._types:
            self._types[dataset] = FieldTypes(self._existing_shapes(dataset))
        return self._types[dataset]

    def _existing_shapes(self, dataset: str) -> dict[str, Shape]:
        """The field shapes of the dataset's newest readable file (its footer only), or none without one.

        A file that cannot be read (written by something else, or damaged) is passed over with a warning:
        the dataset's types then come from the newest file before it."""
        import pyarrow.parquet as pq

        folder = Path(landing_folder(str(self.root), dataset))
        if not folder.is_dir():
            return {}
        prefix = f"{LANDING_PARTITION}="
        days = sorted(
            (d.name for d in os.scandir(folder) if d.name.startswith(prefix) and d.is_dir()), reverse=True
        )
        for day in days:
            names = [n for n in os.listdir(folder / day) if n.startswith("part-") and n.endswith(".parquet")]
            for name in sorted(names, reverse=True):  # part-<timestamp>-...: the newest first
                path = folder / day / name
                try:
                    schema = pq.read_schema(path)
                except Exception as exc:
                    log.warning(
                        "landing %r: passed over %r, which cannot be read as Parquet (%s); the field "
                        "types come from an older file", dataset, f"{day}/{name}", cut(str(exc), 200),
                    )  # fmt: skip
                    continue
                return {f.name: _arrow_shape(f.type) for f in schema if f.name not in META_COLUMNS}
        return {}

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
            shapes = self.field_types(dataset).shapes  # a type the dataset's files hold wins (int: double)
            declared = [
                f
                if f.name in as_json or f.name in META_COLUMNS
                else f.with_type(_arrow_of(shapes.get(f.name)) or f.type)
                for f in schema
            ]
            # A model with extra="allow" dumps fields it does not declare: typed as a dict's fields are.
            extra, blank = _rows_schema({k: shapes.get(k) for k in _extra_names(rows, schema.names)})
            schema = pa.schema(declared[: -len(META_COLUMNS)] + list(extra))
            if as_json or blank:
                rows = [
                    {
                        **r,
                        **{k: orjson.dumps(r[k]).decode() for k in as_json if k in r},
                        **{k: _blank(r[k], blank[k]) for k in blank if k in r},
                    }
                    for r in rows
                ]
            table = pa.Table.from_pylist(rows, schema=schema)
        else:  # the dataset's field types, never pyarrow's inference from this file's rows alone
            schema, blank = _rows_schema(self.field_types(dataset).shapes)
            if blank:
                rows = [{**r, **{k: _blank(r[k], blank[k]) for k in blank if k in r}} for r in rows]
            table = pa.Table.from_pylist(rows, schema=schema)
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
_EXACT_IN_DOUBLE = 2**53
# Values pyarrow writes as they are, beside bool, numbers, dicts and lists (in this order: a datetime is a date).
_SCALARS: tuple[type, ...] = (str, bytes, datetime, date, time_of_day, timedelta, Decimal, UUID)
_DECIMAL_SCALE = 18  # a Decimal column is decimal128(38, 18) in every file
# A field's shape: None (only nulls so far), a kind name, ("list", Shape) or ("dict", {name: Shape}).
# Integers are "int", or "bigint" beyond 2**53 (no double holds them exactly); once written to a file
# they are "int64", which takes no float (the files would disagree on the column's type).
Shape = Any
_INTEGERS = frozenset({"int", "bigint", "int64"})
_NUMBERS = _INTEGERS | {"float"}


def _shape(value: Any, nested: bool = False) -> Shape:
    """What a Parquet column needs of ``value`` (``nested`` in a list or an object); ``ValueError`` for a
    value no column can hold."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise ValueError(f"{value} does not fit a 64-bit integer")
        return "int" if -_EXACT_IN_DOUBLE <= value <= _EXACT_IN_DOUBLE else "bigint"
    if isinstance(value, float):
        return "float"
    if isinstance(value, Decimal):
        exponent = value.as_tuple().exponent  # "n", "N" or "F" when not finite
        if (
            not isinstance(exponent, int)
            or -exponent > _DECIMAL_SCALE
            or value.adjusted() >= 38 - _DECIMAL_SCALE
        ):
            raise ValueError(
                f"Decimal {value} does not fit decimal(38, {_DECIMAL_SCALE}); convert it (to str, for one)"
            )
        return "Decimal"
    if nested and isinstance(value, UUID):  # pyarrow converts a UUID only as a column of its own
        raise ValueError(
            "a UUID in a list or an object cannot be a Parquet value; convert it (to str, for one)"
        )
    for kind in _SCALARS:  # a str enum is a str; a datetime, not a date
        if isinstance(value, kind):
            return kind.__name__
    if isinstance(value, dict):
        return ("dict", {str(k): _shape(v, True) for k, v in value.items()})
    if isinstance(value, list | tuple | set):
        item: Shape = None
        for element in value:
            item = _merge(item, _shape(element, True))
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
    if isinstance(known, str) and isinstance(new, str) and {known, new} <= _NUMBERS:
        return _merge_numbers(known, new)
    raise ValueError(f"{_kind(new)} where earlier rows hold {_kind(known)}; a field keeps one type")


def _merge_numbers(known: str, new: str) -> str:
    """Integers widen to a double column until a file holds them as integers (a double then is refused,
    as an integer beyond 2**53 is by a double column: the files would disagree, or a value round)."""
    pair = {known, new}
    if pair <= _INTEGERS:
        return "int64" if "int64" in pair else "bigint"
    if pair == {"int", "float"}:
        return "float"
    if known == "int64":
        raise ValueError("float where the dataset's files hold int; a field keeps one type")
    raise ValueError(
        f"{_kind(new)} where earlier rows hold {_kind(known)}, and no double holds an int beyond 2**53 "
        "exactly; a field keeps one type"
    )


def _kind(shape: Shape) -> str:
    if isinstance(shape, tuple):
        return str(shape[0])
    return "int" if shape in _INTEGERS else str(shape)


def _written(shape: Shape) -> Shape:
    """``shape`` once a file holds it: its integers are 64-bit integer columns for good."""
    if isinstance(shape, tuple):
        if shape[0] == "list":
            return ("list", _written(shape[1]))
        return ("dict", {name: _written(s) for name, s in shape[1].items()})
    return "int64" if shape in _INTEGERS else shape


class FieldTypes:
    """The shape of each field of one dataset: adopted from its existing files, then kept by every row.

    A row that does not fit is refused in ``check`` (its input alone dead-lettered), never at the
    flush, where it would fail the whole file and stop the consumer on every restart.
    """

    def __init__(self, shapes: dict[str, Shape]) -> None:
        self.shapes = {name: _written(shape) for name, shape in shapes.items()}

    def check(self, fields: Row, as_json: set[str], label: str) -> None:
        merged: dict[str, Shape] = {}
        for name, value in fields.items():
            try:
                if name in as_json:  # a model's field landed as JSON text: it must encode
                    orjson.dumps(value)
                    merged[name] = _merge(self.shapes.get(name), "str")
                else:
                    merged[name] = _merge(self.shapes.get(name), _shape(value))
            except (ValueError, TypeError) as exc:  # orjson.JSONEncodeError is a TypeError
                raise ValueError(f"Landing {label!r}: field {name!r}: {exc}") from None
        self.shapes.update(merged)  # only once the whole row fits

    def written(self) -> None:
        """A file holds the fields as they are: an integer field stays one."""
        self.shapes = {name: _written(shape) for name, shape in self.shapes.items()}


def _arrow_of(shape: Shape) -> Any:
    """The Arrow type of a field's shape; ``None`` when no value has a type yet (only nulls, or only
    objects without a key): the file leaves the field out, and it reads as null."""
    import pyarrow as pa

    if shape is None:
        return None
    if isinstance(shape, tuple):
        if shape[0] == "list":
            return pa.list_(_arrow_of(shape[1]) or pa.null())
        children = [(name, _arrow_of(s)) for name, s in shape[1].items()]
        typed = [pa.field(name, arrow) for name, arrow in children if arrow is not None]
        return pa.struct(typed) if typed else None
    return {
        "bool": pa.bool_(),
        "int": pa.int64(),
        "bigint": pa.int64(),
        "int64": pa.int64(),
        "float": pa.float64(),
        "str": pa.string(),
        "bytes": pa.binary(),
        "datetime": pa.timestamp("us", tz="UTC"),
        "date": pa.date32(),
        "time": pa.time64("us"),
        "timedelta": pa.duration("us"),
        "Decimal": pa.decimal128(38, _DECIMAL_SCALE),
        "UUID": pa.uuid(),
    }[shape]


def _arrow_shape(arrow: Any) -> Shape:
    """The shape of a column of an existing file (a type thimble never writes: unknown, ``None``)."""
    import pyarrow as pa
    import pyarrow.types as pt

    if isinstance(arrow, pa.BaseExtensionType):
        return "UUID" if arrow.extension_name == "arrow.uuid" else None
    if pt.is_struct(arrow):
        return (
            "dict",
            {arrow.field(i).name: _arrow_shape(arrow.field(i).type) for i in range(arrow.num_fields)},
        )
    if pt.is_list(arrow) or pt.is_large_list(arrow):
        return ("list", _arrow_shape(arrow.value_type))
    checks = [
        (pt.is_boolean, "bool"),
        (pt.is_integer, "int64"),
        (pt.is_floating, "float"),
        (lambda t: pt.is_string(t) or pt.is_large_string(t), "str"),
        (lambda t: pt.is_binary(t) or pt.is_large_binary(t), "bytes"),
        (pt.is_timestamp, "datetime"),
        (pt.is_date, "date"),
        (pt.is_time, "time"),
        (pt.is_duration, "timedelta"),
        (pt.is_decimal, "Decimal"),
    ]
    return next((kind for check, kind in checks if check(arrow)), None)


def _rows_schema(shapes: dict[str, Shape]) -> tuple[Any, dict[str, Shape]]:
    """The schema of a file of rows without a model, and the fields whose objects without a key (in
    lists, where they cannot be left out) are written as nulls."""
    import pyarrow as pa

    fields, blank = [], {}
    for name, shape in shapes.items():
        arrow = _arrow_of(shape)
        if arrow is not None and name not in META_COLUMNS:
            fields.append(pa.field(name, arrow))
            if _has_keyless_items(shape):
                blank[name] = shape
    return pa.schema(fields + _meta_fields()), blank


def _extra_names(rows: list[Row], declared: list[str]) -> list[str]:
    """The fields of ``rows`` a model does not declare (its ``extra="allow"`` fields), in first-seen order."""
    known, extra = set(declared), dict[str, None]()
    for row in rows:
        if known.issuperset(row):
            continue
        for name in row:
            if name not in known:
                extra[name] = None
    return list(extra)


def _has_keyless_items(shape: Shape) -> bool:
    if not isinstance(shape, tuple):
        return False
    if shape[0] == "list":
        item = shape[1]
        return (isinstance(item, tuple) and _arrow_of(item) is None) or _has_keyless_items(item)
    return any(_has_keyless_items(s) for s in shape[1].values())


def _blank(value: Any, shape: Shape) -> Any:
    """``value`` with its objects that have no typed key replaced by nulls."""
    if value is None or not isinstance(shape, tuple):
        return value
    if shape[0] == "list":
        return [_blank(v, shape[1]) for v in value]
    if _arrow_of(shape) is None:
        return None
    return {k: _blank(v, shape[1].get(str(k))) for k, v in value.items()}


class MemoryLanding:
    """Landed rows kept in memory (the test harness)."""

    def __init__(self) -> None:
        self.rows: dict[str, list[Row]] = {}
        self._types: dict[str, FieldTypes] = {}

    def warm_up(self) -> None:
        return

    def field_types(self, dataset: str) -> FieldTypes:
        return self._types.setdefault(dataset, FieldTypes({}))

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
        self._types: FieldTypes | None = None  # the dataset's, from the store at the first output
        self._as_json: set[str] = set()  # a model's fields landed as JSON text: any shape, row by row
        store.warm_up()

    def prepare(self, output: Any, msg: Any) -> tuple[str, Row]:
        value = unwrap(output)[0]
        if isinstance(value, BaseModel) and type(value) is not self._model:
            self._model = type(value)
            self._as_json = _json_fields(self._model)
        fields = record_fields(value)
        refused = refusal(fields)  # a field the writer adds would overwrite it, or the folder hide it
        if refused is not None:
            raise ValueError(f"Landing {self.label!r}: {refused}")
        if self._types is None:
            self._types = self.store.field_types(self.spec.dataset)
        self._types.check(fields, self._as_json, self.label)
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
                if self._types is not None:
                    self._types.written()
        except Exception as exc:
            error = SinkError(f"landing {self.label!r}: {type(exc).__name__}: {exc}")
            for p in pending:
                p.fail(error)
            return
        for p in pending:
            p.release()

    def close(self) -> None:
        return
