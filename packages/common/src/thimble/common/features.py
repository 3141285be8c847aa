"""Feature sets: one typed definition that the consumer writes, the warehouse journals and models read.

A :class:`FeatureSet` names an entity's features once; every layout that the packages share is derived
from it here, and only here:

* the online store (Redis): a hash per entity at ``{key_prefix}:{name}:{entity}``, one field per feature
  (JSON-encoded), plus :data:`EVENT_TIME_FIELD` (epoch milliseconds), which is not a feature;
* the landing area: Parquet files under ``{landing}/{dataset}/date=YYYY-MM-DD/``;
* the warehouse: the journal table ``{database}.{table}`` (SCD type 2 by ``entity_key``, ordered by
  ``event_time``).
"""

from __future__ import annotations

import re
import types
import typing
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel

from thimble.common.errors import ConfigError

EVENT_TIME_FIELD = "_event_time"
"""The online store's field holding the entity's event time (epoch milliseconds); not a feature."""

LANDING_PARTITION = "date"
"""The landing folders' partition: ``{dataset}/date=YYYY-MM-DD/``, the UTC date of the event time."""

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
"""A feature set, dataset or table name: a letter or digit, then letters, digits, ``_`` or ``-``."""

TABLE_PART = r"[A-Za-z_][A-Za-z0-9_]{0,127}"
"""One part of a warehouse table's name: a letter or ``_``, then letters, digits or ``_`` (at most 128)."""

TABLE_NAME = re.compile(rf"{TABLE_PART}(?:\.{TABLE_PART})?")
"""A warehouse table as every package takes one from a user: ``name`` or ``database.name``."""

JOURNAL_COLUMNS = ("row_hash", "valid_from", "valid_to", "is_current")
"""The columns a journal table adds to its entity key and tracked columns, in this order."""

_TABLE_PATTERN = re.compile(TABLE_PART)


def check_name(value: str, what: str) -> str:
    """``value`` if it is a safe name (no separator, no ``..``, no ``:``); else :class:`ConfigError`."""
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise ConfigError(
            [
                f"{what} {value!r} is not a valid name: use letters, digits, '_' and '-', starting with a "
                "letter or digit (at most 128 characters)"
            ]
        )
    return value


def qualified_table(table: str, database: str) -> str:
    """``name`` -> ``database.name``; ``db.name`` is kept as it is."""
    return table if "." in table else f"{database}.{table}"


def landing_folder(landing: str, dataset: str, day: str | None = None) -> str:
    """A dataset's folder in the landing area, or with ``day`` (``YYYY-MM-DD``, or ``*`` as a glob) the
    folder of that day's files; the dataset is checked with :func:`check_name`."""
    folder = f"{landing.rstrip('/')}/{check_name(dataset, 'landing dataset')}"
    return folder if day is None else f"{folder}/{LANDING_PARTITION}={day}"


def online_key(prefix: str, feature_set: str, entity: Any) -> str:
    """The online store's key of one entity of a feature set."""
    return f"{prefix}:{feature_set}:{entity}"


@dataclass(frozen=True, slots=True)
class FeatureSet:
    """An entity's features: a name, the entity key and event time fields of ``schema``, and the schema.

    ``dataset`` (the landing dataset) defaults to the name with ``-`` as ``_``; ``table`` (the journal
    table in the warehouse) defaults to the dataset.

    >>> class ClientFeatures(BaseModel):
    ...     client_id: str
    ...     event_time: datetime
    ...     orders: int = 0
    >>> fs = FeatureSet("client-features", ClientFeatures, entity_key="client_id", event_time="event_time")
    >>> fs.online_key("features", "c00042"), fs.dataset, fs.table
    ('features:client-features:c00042', 'client_features', 'client_features')
    >>> fs.features
    ('orders',)
    """

    name: str
    schema: type[BaseModel]
    entity_key: str
    event_time: str
    dataset: str = field(default="")
    table: str = field(default="")

    def __post_init__(self) -> None:
        check_name(self.name, "feature set")
        if not (isinstance(self.schema, type) and issubclass(self.schema, BaseModel)):
            raise ConfigError([f"feature set {self.name!r}: schema must be a pydantic model class"])
        fields = self.schema.model_fields
        for role, column in (("entity_key", self.entity_key), ("event_time", self.event_time)):
            if column not in fields:
                raise ConfigError(
                    [
                        f"feature set {self.name!r}: {role} {column!r} is not a field of "
                        f"{self.schema.__name__} (fields: {', '.join(fields)})"
                    ]
                )
        stored_as = {
            alias for info in fields.values() for alias in (info.alias, info.serialization_alias) if alias
        }
        if reserved := sorted(a for a in stored_as if a.startswith("_")):
            raise ConfigError(
                [
                    f"feature set {self.name!r}: field alias {reserved[0]!r} starts with '_', which the "
                    f"online store reserves for its own fields ({EVENT_TIME_FIELD!r}, applied offsets)"
                ]
            )
        if _base(fields[self.event_time].annotation) not in (datetime, int):
            raise ConfigError(
                [
                    f"feature set {self.name!r}: event_time {self.event_time!r} must be a datetime or "
                    "epoch milliseconds (int)"
                ]
            )
        dataset = self.dataset or self.name.replace("-", "_")
        object.__setattr__(self, "dataset", check_name(dataset, f"feature set {self.name!r}: dataset"))
        table = self.table or dataset
        if not _TABLE_PATTERN.fullmatch(table):
            raise ConfigError(
                [
                    f"feature set {self.name!r}: table {table!r} is not a valid table name: use letters, "
                    "digits and '_', starting with a letter or '_'"
                ]
            )
        object.__setattr__(self, "table", table)

    @property
    def features(self) -> tuple[str, ...]:
        """The feature fields: every field of the schema but the entity key and the event time."""
        return tuple(f for f in self.schema.model_fields if f not in (self.entity_key, self.event_time))

    def online_key(self, prefix: str, entity: Any) -> str:
        """The online store's key of ``entity``: ``{prefix}:{name}:{entity}``."""
        return online_key(prefix, self.name, entity)

    def landing_folder(self, landing: str, day: str | None = None) -> str:
        """The landing folder of the set's dataset (of one ``day`` with it)."""
        return landing_folder(landing, self.dataset, day)

    def journal_table(self, database: str) -> str:
        """The journal table, qualified by ``database``."""
        return qualified_table(self.table, database)

    def journal(self) -> dict[str, Any]:
        """thimble-etl's ``journal`` section for this set: versions by entity, ordered by event time."""
        return {"keys": [self.entity_key], "order_by": self.event_time}

    def columns(self) -> dict[str, str]:
        """Spark SQL types of the schema's fields as landed (a nested value as a JSON string), as a
        thimble-etl ``schema.columns`` section."""
        return {name: _spark_type(info.annotation) for name, info in self.schema.model_fields.items()}


def _base(annotation: Any) -> Any:
    """``X`` of ``X | None``; other annotations unchanged."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


_SPARK_TYPES: dict[Any, str] = {
    bool: "boolean",
    int: "bigint",
    float: "double",
    str: "string",
    bytes: "binary",
    datetime: "timestamp",
    date: "date",
}


def _spark_type(annotation: Any) -> str:
    """The warehouse column type of a field; other types land as JSON strings."""
    return _SPARK_TYPES.get(_base(annotation), "string")
