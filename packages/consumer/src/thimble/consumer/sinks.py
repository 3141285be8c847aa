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
    output field named like one of the store's own: ``_event_time``, ``_version``, ``_applied:*``.

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


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an output annotation can hold (through unions, lists and ``Annotated``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list, tuple, Sequence, typing.Annotated):
        args = typing.get_args(annotation)
        return [m for arg in (args[:1] if origin is typing.Annotated else args) for m in _models(arg)]
    return []


def check_output(sink: Sink, output_type: Any, handler: str) -> None:
    """Refuse a sink that needs a field the handler's declared output model does not have."""
    if isinstance(sink, OnlineStore):
        needed = {"entity_key": sink.entity_key, "event_time": sink.event_time}
        what = f"OnlineStore({sink.feature_set!r})"
    elif isinstance(sink, Landing):
        needed, what = {"event_time": sink.event_time}, f"Landing({sink.dataset!r})"
    else:
        return
    for model in _models(output_type):
        for role, name in needed.items():
            if name is not None and name not in model.model_fields:
                raise HandlerSignatureError(
                    f"handler {handler}: {what} reads the {role} {name!r} of each output, but "
                    f"{model.__name__} has no such field (fields: {', '.join(model.model_fields)})"
                )
