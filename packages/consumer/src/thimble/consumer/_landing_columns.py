"""The columns a landing file has beside the output's own fields, which no output field may be named.

The landing writer (:mod:`thimble.consumer._landing`) adds them to every row: the partition column,
whose value is the ``date=YYYY-MM-DD`` folder, and the Kafka metadata. An output field of the same
name would be lost without a word (overwritten, or hidden by the folder's value when read), so it is
refused: at declaration for a declared output type (:func:`thimble.consumer.sinks.check_output`), and
output by output at run time. Names are compared without case, as Spark and Parquet readers do: two
output fields that differ only in case (``Amount`` and ``amount``) are one column, refused the same way.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Collection
from typing import Any

from pydantic import BaseModel

from thimble.common.features import LANDING_PARTITION

META_COLUMNS = ("_kafka_topic", "_kafka_partition", "_kafka_offset", "_landed_at")
"""The Kafka metadata columns of every landed row."""
RESERVED = (LANDING_PARTITION, *META_COLUMNS)
"""Every name the landing writer adds: no output field may take one, whatever its case."""
_FOLDED = {name.lower(): name for name in RESERVED}


def clash(name: str) -> str | None:
    """Why an output field ``name`` cannot land (``is the landing's partition column ...``), or ``None``."""
    column = _FOLDED.get(name.lower())
    if column is None:
        return None
    if column == LANDING_PARTITION:
        role = f"the landing's partition column (its folders are {LANDING_PARTITION}=YYYY-MM-DD)"
    else:
        role = f"a column the landing adds to every row ({', '.join(META_COLUMNS)})"
    if name != column:
        return f"is {column!r} to Spark and Parquet readers, which ignore case, and {column!r} is {role}"
    return f"is {role}"


def same_column(names: Collection[str]) -> tuple[str, str] | None:
    """The first two of ``names`` that differ only in case (one column to Spark and Parquet readers), or
    ``None``."""
    seen: dict[str, str] = {}
    for name in names:
        other = seen.setdefault(name.lower(), name)
        if other != name:
            return other, name
    return None


ONE_COLUMN = "are one column to Spark and Parquet readers, which ignore case"


def refusal(names: Collection[str]) -> str | None:
    """``output field 'date' is ...; rename it`` for the first of ``names`` that clashes, ``output fields
    'Amount' and 'amount' are one column ...`` for two that differ only in case, or ``None``."""
    folded = set(map(str.lower, names))  # each output passes here: the fast tests first
    if _FOLDED.keys().isdisjoint(folded) and len(folded) == len(names):
        return None
    for name in names:
        why = clash(name)
        if why is not None:
            return f"output field {name!r} {why}; rename it"
    pair = same_column(names)
    if pair is not None:
        return f"output fields {pair[0]!r} and {pair[1]!r} {ONE_COLUMN}; rename one"
    return None  # pragma: no cover - a fast test found one


def landed_names(record: type) -> dict[str, str] | None:
    """The fields of a declared output type (a pydantic model, dataclass or TypedDict) and the column
    each lands as (a model's serialization alias when it dumps by alias); ``None`` for another type."""
    if isinstance(record, type) and issubclass(record, BaseModel):
        by_alias = bool(record.model_config.get("serialize_by_alias"))
        return {
            name: (info.serialization_alias or name) if by_alias else name
            for name, info in record.model_fields.items()
        }
    if dataclasses.is_dataclass(record) and isinstance(record, type):
        return {f.name: f.name for f in dataclasses.fields(record)}
    if typing.is_typeddict(record):
        keys: Any = record.__annotations__
        return {str(k): str(k) for k in keys}
    return None
