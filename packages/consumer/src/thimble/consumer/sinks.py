"""Where a handler's outputs go. ``sink="topic"`` is a :class:`Topic`; combine several in a list.

Each sink acknowledges an output only once it is durable there, and a message's offset is committed
only after every sink acknowledged every output of that message.

:class:`OnlineStore` and :class:`Landing` take a :class:`~thimble.common.features.FeatureSet`, which
gives them its name, entity key, event time and landing dataset; plain names work as well.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from thimble.common.errors import ConfigError
from thimble.common.features import FeatureSet, check_name
from thimble.consumer._landing_columns import ONE_COLUMN, clash, landed_names, same_column
from thimble.consumer._online_hash import RESERVED, reserved
from thimble.consumer.errors import HandlerSignatureError


def _name(value: str, what: str) -> str:
    """``value`` if it is a safe name; else a one-line :class:`HandlerSignatureError`."""
    try:
        return check_name(value, what)
    except ConfigError as exc:
        raise HandlerSignatureError("; ".join(exc.problems)) from None


def _same(feature_set: FeatureSet, role: str, given: str | None, defined: str, sink: str) -> str:
    """The feature set's ``role`` field; a different one given beside it is refused."""
    if given is not None and given != defined:
        raise HandlerSignatureError(
            f"{sink}({feature_set.name!r}): {role}={given!r} differs from the feature set's {role} "
            f"{defined!r}; leave it out"
        )
    return defined


@dataclass(frozen=True, slots=True)
class Topic:
    """A Kafka topic (idempotent producer, ``acks=all``; transactional in exactly-once mode)."""

    name: str

    @property
    def label(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True, init=False)
class OnlineStore:
    """The online feature store: one Redis hash per entity, the latest *event time* wins.

    ``OnlineStore(client_features)`` takes the name, entity key and event time of a
    :class:`~thimble.common.features.FeatureSet`; ``OnlineStore("client-features", entity_key="client_id")``
    names them one by one.

    Key ``{online_store.key_prefix}:{feature_set}:{entity}``, the entity being the output's
    ``entity_key`` field: a non-empty string (no control character, at most 512 characters) as it is,
    an integer in decimal (``42.0`` is ``42``: one entity), a UUID in its canonical form. Any other value
    (``None``, a bool, ``42.5``, a list, a dict...) dead-letters the input (stage ``output``), as does an
    output field named like one of the store's own: ``_event_time``, ``_version``, ``_applied:*`` (a
    declared output type with one is refused at declaration).

    One field per output field, each value JSON-encoded, plus ``_event_time`` (epoch milliseconds).
    ``event_time`` names the output field that holds the event time (a datetime or epoch milliseconds);
    without it, the input record's Kafka timestamp is used. ``ttl_s`` expires entities that stop being
    updated.
    """

    feature_set: str
    entity_key: str
    event_time: str | None
    ttl_s: int | None
    definition: FeatureSet | None = field(compare=False)
    """The :class:`~thimble.common.features.FeatureSet` this sink was made from, if any."""

    def __init__(
        self,
        feature_set: str | FeatureSet,
        entity_key: str | None = None,
        event_time: str | None = None,
        ttl_s: int | None = None,
    ) -> None:
        definition: FeatureSet | None = None
        if isinstance(feature_set, FeatureSet):
            definition, name = feature_set, feature_set.name
            entity_key = _same(definition, "entity_key", entity_key, definition.entity_key, "OnlineStore")
            event_time = _same(definition, "event_time", event_time, definition.event_time, "OnlineStore")
        else:
            name = _name(feature_set, "OnlineStore feature set")
            if not entity_key:
                raise HandlerSignatureError(
                    f"OnlineStore({name!r}) needs entity_key=, the output field that names the entity"
                )
        object.__setattr__(self, "feature_set", name)
        object.__setattr__(self, "entity_key", entity_key)
        object.__setattr__(self, "event_time", event_time)
        object.__setattr__(self, "ttl_s", ttl_s)
        object.__setattr__(self, "definition", definition)

    @property
    def label(self) -> str:
        return self.feature_set


@dataclass(frozen=True, slots=True, init=False)
class Landing:
    """Parquet files in the warehouse landing area, one folder per UTC date of the event time.

    ``Landing(client_features)`` lands a :class:`~thimble.common.features.FeatureSet`'s dataset by its
    event time; ``Landing("client_features", event_time="ts")`` names them one by one. A dataset name is
    letters, digits, ``_`` and ``-``.

    Files: ``{warehouse.landing}/{dataset}/date=YYYY-MM-DD/part-<timestamp>-<uuid>.parquet``, written
    in batches (``batch_rows`` rows or ``flush_interval_s`` seconds; defaults from the ``consumer``
    config) and made visible atomically. ``event_time`` as for :class:`OnlineStore`.
    """

    dataset: str
    event_time: str | None
    batch_rows: int | None
    flush_interval_s: float | None
    definition: FeatureSet | None = field(compare=False)
    """The :class:`~thimble.common.features.FeatureSet` this sink was made from, if any."""

    def __init__(
        self,
        dataset: str | FeatureSet,
        event_time: str | None = None,
        batch_rows: int | None = None,
        flush_interval_s: float | None = None,
    ) -> None:
        definition: FeatureSet | None = None
        if isinstance(dataset, FeatureSet):
            definition, name = dataset, dataset.dataset
            event_time = _same(definition, "event_time", event_time, definition.event_time, "Landing")
        else:
            name = _name(dataset, "Landing dataset")
        object.__setattr__(self, "dataset", name)
        object.__setattr__(self, "event_time", event_time)
        object.__setattr__(self, "batch_rows", batch_rows)
        object.__setattr__(self, "flush_interval_s", flush_interval_s)
        object.__setattr__(self, "definition", definition)

    @property
    def label(self) -> str:
        return self.dataset


Sink = Topic | OnlineStore | Landing


def _records(annotation: Any) -> list[type]:
    """The record types (pydantic models, dataclasses, TypedDicts) an output annotation can hold, through
    unions, lists and ``Annotated``."""
    if landed_names(annotation) is not None:
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list, tuple, Sequence, typing.Annotated):
        args = typing.get_args(annotation)
        return [r for arg in (args[:1] if origin is typing.Annotated else args) for r in _records(arg)]
    return []


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an output annotation can hold."""
    return [r for r in _records(annotation) if issubclass(r, BaseModel)]


def check_output(sink: Sink, output_type: Any, handler: str) -> None:
    """Refuse a sink that needs a field the handler's declared output model does not dump, a
    :class:`Landing` of a declared output with a field named like a column the landing adds or two
    fields differing only in case, and an :class:`OnlineStore` of one with a field of the store's own."""
    if isinstance(sink, Landing):
        _check_landed_names(sink, output_type, handler)
    if isinstance(sink, OnlineStore):
        _check_stored_names(sink, output_type, handler)
        needed = {"entity_key": sink.entity_key, "event_time": sink.event_time}
        what = f"OnlineStore({sink.feature_set!r})"
    elif isinstance(sink, Landing):
        needed, what = {"event_time": sink.event_time}, f"Landing({sink.dataset!r})"
    else:
        return
    for model in _models(output_type):
        dumped = landed_names(model) or {}  # the writers read the fields as the model dumps them
        columns = set(dumped.values())
        for role, name in needed.items():
            if name is None or name in columns:
                continue
            as_dumped = dumped.get(name)  # the Python name of a field dumped under its alias
            why = (
                f"{model.__name__} dumps field {name!r} as {as_dumped!r} (serialize_by_alias); "
                f"write {role}={as_dumped!r}"
                if as_dumped is not None
                else f"{model.__name__} has no such field (fields: {', '.join(dumped.values())})"
            )
            raise HandlerSignatureError(
                f"handler {handler}: {what} reads the {role} {name!r} of each output, but {why}"
            )


def _landed_field(name: str, column: str, verb: str = "landed") -> str:
    """``'n'``, or ``'n' (landed as 'N')`` for a field dumped under an alias."""
    return repr(name) if column == name else f"{name!r} ({verb} as {column!r})"


def _check_landed_names(sink: Landing, output_type: Any, handler: str) -> None:
    for record in _records(output_type):
        names = landed_names(record) or {}
        for name, column in names.items():
            why = clash(column)
            if why is not None:
                subject = "it" if column == name else repr(column)
                raise HandlerSignatureError(
                    f"handler {handler}: Landing({sink.dataset!r}) cannot land field "
                    f"{_landed_field(name, column)} of {record.__name__}: {subject} {why}; rename it"
                )
        pair = same_column(list(names.values()))
        if pair is not None:
            fields = {column: name for name, column in names.items()}
            first, second = (_landed_field(fields[column], column) for column in pair)
            raise HandlerSignatureError(
                f"handler {handler}: Landing({sink.dataset!r}) cannot land fields {first} and {second} of "
                f"{record.__name__}: they {ONE_COLUMN}; rename one"
            )


def _check_stored_names(sink: OnlineStore, output_type: Any, handler: str) -> None:
    for record in _records(output_type):
        for name, column in (landed_names(record) or {}).items():
            if reserved(column):
                subject = "it" if column == name else repr(column)
                stored = _landed_field(name, column, "stored")
                raise HandlerSignatureError(
                    f"handler {handler}: OnlineStore({sink.feature_set!r}) cannot store field {stored} of "
                    f"{record.__name__}: {subject} is one of the store's own fields ({RESERVED}); rename it"
                )
