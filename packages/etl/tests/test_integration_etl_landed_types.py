"""Landed files that disagree on a field's type.

Two consumer processes that start on an empty dataset at once each choose a field's type from the first
values they see: one writes ``amount`` as ``bigint`` (it saw ``10``), the other as ``double`` (``10.5``).
Spark cannot merge those schemas, so every later run failed on the same files. A number's width is read
as a union widens it; any other disagreement is one line naming the field and a file of each kind.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from thimble.common.config import ThimbleSettings
from thimble.common.features import landing_folder
from thimble.etl import history, run_table
from thimble.etl.errors import SourceError

from .conftest import config

pytestmark = pytest.mark.integration


def _land(settings: ThimbleSettings, dataset: str, day: str, columns: dict[str, pa.Array]) -> Path:
    folder = Path(landing_folder(settings.warehouse.landing, dataset, day))
    folder.mkdir(parents=True, exist_ok=True)
    rows = len(next(iter(columns.values())))
    offsets = {
        "_kafka_topic": pa.array(["events"] * rows),
        "_kafka_partition": pa.array([0] * rows, pa.int32()),
        "_kafka_offset": pa.array(range(rows), pa.int64()),
    }
    path = folder / f"part-{uuid.uuid4().hex}.parquet"
    pq.write_table(pa.table({**columns, **offsets}), path)
    return path


def _landing_table(table: str, dataset: str) -> Any:
    return config(table=table, source={"type": "landing", "dataset": dataset}, write={"mode": "append"})


def test_files_that_disagree_on_a_numbers_width_are_read_widened(
    spark: Any, spark_settings: ThimbleSettings, table_name: str
) -> None:
    dataset = f"widths_{uuid.uuid4().hex[:8]}"
    item = pa.struct([("qty", pa.int64())])
    _land(
        spark_settings,
        dataset,
        "2026-01-01",
        {
            "client_id": pa.array([1, 2], pa.int64()),
            "amount": pa.array([10, 20], pa.int64()),
            "basket": pa.array([[{"qty": 1}], [{"qty": 2}]], pa.list_(item)),
        },
    )
    _land(
        spark_settings,
        dataset,
        "2026-01-02",
        {
            "client_id": pa.array([3], pa.int64()),
            "amount": pa.array([10.5], pa.float64()),
            "basket": pa.array([[{"qty": 0.5}]], pa.list_(pa.struct([("qty", pa.float64())]))),
        },
    )
    _land(spark_settings, dataset, "2026-01-02", {"client_id": pa.array([4], pa.int64())})  # no amount

    result = run_table(_landing_table(table_name, dataset), spark=spark, settings=spark_settings)

    assert (result.status, result.inserted) == ("committed", 4), result
    rows = spark.table(f"{spark_settings.warehouse.database}.{table_name}")
    assert dict(rows.dtypes)["amount"] == "double"
    assert dict(rows.dtypes)["basket"] == "array<struct<qty:double>>"
    landed = {r["client_id"]: (r["amount"], r["basket"]) for r in rows.collect()}
    assert {k: v[0] for k, v in landed.items()} == {1: 10.0, 2: 20.0, 3: 10.5, 4: None}
    assert [i["qty"] for i in landed[3][1]] == [0.5]
    latest = history(table_name, spark=spark, settings=spark_settings)[0]
    assert latest.source["kafka_offsets"] == {"events": {"0": 1}}


@pytest.mark.parametrize("nested", [False, True])
def test_files_that_disagree_on_a_fields_kind_fail_the_run_naming_the_field_and_both_files(
    spark: Any, spark_settings: ThimbleSettings, table_name: str, nested: bool
) -> None:
    dataset = f"kinds_{uuid.uuid4().hex[:8]}"

    def code(values: pa.Array) -> pa.Array:
        return pa.StructArray.from_arrays([values], names=["code"]) if nested else values

    text = _land(spark_settings, dataset, "2026-01-01", {"ref": code(pa.array(["A7"]))})
    _land(spark_settings, dataset, "2026-01-01", {"other": pa.array([1.5])})
    number = _land(spark_settings, dataset, "2026-01-02", {"ref": code(pa.array([7], pa.int64()))})

    with pytest.raises(SourceError) as failed:
        run_table(_landing_table(table_name, dataset), spark=spark, settings=spark_settings)

    message = str(failed.value)
    field = "ref.code" if nested else "ref"
    assert "\n" not in message
    assert message.startswith(f"the landed files disagree on field {field!r}: ")
    assert f"string in file:{text}" in message
    assert f"bigint in file:{number}" in message
