"""The landing writer against a tiny reference: whatever the records (types mixed within a field,
nesting, empty objects and lists, unicode, integers past 64 bits), written in whatever batches by
whichever processes, each record lands exactly or is refused with its field named, and the files read
as one dataset."""

from __future__ import annotations

import tempfile
from datetime import UTC
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thimble.consumer._delivery import Pending
from thimble.consumer._landing import META_COLUMNS, LandingWriter, ParquetFiles
from thimble.consumer.sinks import Landing
from thimble.consumer.testing import _Message

pytestmark = pytest.mark.unit

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.integers(-(2**70), 2**70)  # past 2**53 (no double holds them) and past 64 bits
    | st.floats(allow_nan=False)
    | st.text(max_size=5)  # any code point but surrogates
    | st.binary(max_size=3)
    | st.datetimes(timezones=st.none() | st.just(UTC) | st.timezones())  # naive: UTC
    | st.dates()
    | st.decimals(allow_nan=False, allow_infinity=False)  # places past 18 are refused
    | st.uuids()
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(min_size=1, max_size=2), inner, max_size=3)
    ),
    max_leaves=8,
)
records = st.dictionaries(st.sampled_from(["a", "b", "ü", "日本"]), values, max_size=4)
# Batches of records, each flushed as a file; True: the writer restarts first (a new process).
runs = st.lists(st.tuples(st.booleans(), st.lists(records, max_size=4)), min_size=1, max_size=5)


def _void(value: Any) -> bool:
    """A value Parquet keeps no trace of: null, or an object with no key holding anything else."""
    return value is None or (isinstance(value, dict) and all(_void(v) for v in value.values()))


def _expected(value: Any, arrow: pa.DataType) -> Any:
    """What a column of type ``arrow`` gives back for ``value``: a missing key reads as null."""
    if _void(value) and not pa.types.is_struct(arrow):
        return None
    if value is None:
        return None
    if pa.types.is_struct(arrow):
        assert isinstance(value, dict)
        names = {arrow.field(i).name for i in range(arrow.num_fields)}
        assert all(_void(v) for k, v in value.items() if k not in names), (value, arrow)
        return {f.name: _expected(value.get(f.name), f.type) for f in arrow}
    if pa.types.is_list(arrow):
        return [_expected(v, arrow.value_type) for v in value]
    if pa.types.is_timestamp(arrow):  # a UTC instant
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if pa.types.is_floating(arrow):
        assert float(value) == value, value  # exactly
        return float(value)
    return value


def _same(actual: Any, expected: Any) -> bool:
    """Equal, but for an object without a non-null key, which a file that has not seen its keys yet
    holds as null (Parquet has no struct without fields): any void value is the same."""
    if _void(expected):
        return _void(actual)
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and actual.keys() == expected.keys()
            and all(_same(actual[k], v) for k, v in expected.items())
        )
    if isinstance(expected, list):
        return isinstance(actual, list) and len(actual) == len(expected) and all(map(_same, actual, expected))
    return type(actual) is type(expected) and actual == expected


@given(runs)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_every_record_lands_exactly_or_is_refused_and_the_files_read_as_one_dataset(
    batches: list[tuple[bool, list[dict[str, Any]]]],
) -> None:
    with tempfile.TemporaryDirectory() as root:
        writer = LandingWriter(Landing("prop"), ParquetFiles(root), 1000, 3600.0)
        sent: dict[int, dict[str, Any]] = {}
        refused: dict[int, str] = {}
        for restart, batch in batches:
            if restart:
                writer = LandingWriter(Landing("prop"), ParquetFiles(root), 1000, 3600.0)
            pending = Pending()
            for record in batch:
                offset = len(sent)
                sent[offset] = record
                try:
                    prepared = writer.prepare(record, _Message("in", 0, offset, None, b"", None, 0))
                except ValueError as exc:
                    refused[offset] = str(exc)
                    continue
                writer.write(prepared, pending)
            writer.flush(0)
            pending.done()
            assert pending.error is None  # a file never fails

        files = sorted(Path(root).rglob("*.parquet"))
        assert all(f.name.startswith("part-") for f in files)  # no temp file left
        if not files:
            assert sorted(refused) == sorted(sent)
            return
        schema = pa.unify_schemas([pq.read_schema(f) for f in files])  # strict: one type per column
        rows = ds.dataset(files, schema=schema, format="parquet").to_table().to_pylist()
        landed = {row["_kafka_offset"]: row for row in rows}
        assert len(landed) == len(rows)  # each once
        assert set(landed).isdisjoint(refused)
        assert set(landed) | set(refused) == set(sent)  # nothing dropped without a reason
        for reason in refused.values():
            assert reason.startswith("Landing 'prop': field "), reason
        for offset, row in landed.items():
            record = sent[offset]
            data = {k: v for k, v in row.items() if k not in META_COLUMNS}
            expected = {f.name: _expected(record.get(f.name), f.type) for f in schema if f.name in data}
            assert all(_void(v) for k, v in record.items() if k not in data), record
            assert _same(data, expected), (record, data, schema)
