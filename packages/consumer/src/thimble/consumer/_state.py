"""Stateful features: an entity's state is its online-store hash, with what was applied to it.

Besides the feature fields (JSON) and ``_event_time``, the hash holds, per source partition,
``_applied:{topic}:{partition}``: the highest offset applied to this entity. A partition is handled
in offset order, so a redelivered event (offset at or below that mark) was already counted and is
skipped. ``_version`` grows with every write; a write is a compare-and-set on it, so two writers of
one entity (two partitions, or a former owner of the partition) never lose each other's updates.

This module holds the declaration and the pure rule; :mod:`thimble.consumer._online_hash` names the
hash's own fields and the entities, as the ``OnlineStore`` sink does; :mod:`thimble.consumer._state_store`
reads and writes hashes, :mod:`thimble.consumer._stateful` runs handlers with them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from thimble.common.features import EVENT_TIME_FIELD, FeatureSet
from thimble.consumer._codec import epoch_ms, json_field, record_fields
from thimble.consumer._online_hash import APPLIED_PREFIX, VERSION_FIELD, EntityError, entity_text


class StateError(ValueError):
    """A stored state or a new state that does not fit its feature set."""


@dataclass(frozen=True, slots=True)
class StateSpec:
    """A stateful handler's state: its feature set, how an event names its entity, and the key's TTL."""

    feature_set: FeatureSet
    key: Callable[[Any], Any] | None = None
    ttl_s: int | None = None

    def entity_of(self, event: Any) -> str:
        """The entity ``event`` updates (``key(event)``, by default its ``entity_key`` field), checked."""
        name = self.feature_set.entity_key
        if self.key is not None:
            entity = self.key(event)
        elif isinstance(event, Mapping):
            if name not in event:
                raise StateError(f"the event has no field {name!r} (the feature set's entity_key)")
            entity = event[name]
        elif hasattr(event, name):
            entity = getattr(event, name)
        else:
            raise StateError(f"the event has no field {name!r} (the feature set's entity_key)")
        try:
            return entity_text(entity)
        except EntityError as exc:
            raise StateError(str(exc)) from None


def applied_field(topic: str, partition: int) -> str:
    """The hash field holding the highest offset of ``topic[partition]`` applied to the entity."""
    return f"{APPLIED_PREFIX}{topic}:{partition}"


@dataclass(slots=True)
class EntityState:
    """One entity's hash as read, then as changed: its value, event time, applied offsets and version."""

    value: BaseModel | None = None
    event_ms: int | None = None
    applied: dict[str, int] = field(default_factory=dict)
    version: int = 0

    def seen(self, topic: str, partition: int, offset: int) -> bool:
        """Whether the event at ``offset`` of ``topic[partition]`` was already applied."""
        return offset <= self.applied.get(applied_field(topic, partition), -1)

    def mark(self, topic: str, partition: int, offset: int) -> None:
        self.applied[applied_field(topic, partition)] = offset


def parse(feature_set: FeatureSet, stored: Mapping[str, bytes]) -> EntityState:
    """The state in a hash as read from the online store (an empty hash: no state yet)."""
    state = EntityState()
    values: dict[str, Any] = {}
    try:
        for name, raw in stored.items():
            if name == VERSION_FIELD:
                state.version = int(raw)
            elif name == EVENT_TIME_FIELD:
                state.event_ms = int(raw)
            elif name.startswith(APPLIED_PREFIX):
                state.applied[name] = int(raw)
            elif not name.startswith("_"):
                values[name] = orjson.loads(raw)
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise StateError(f"stored field {name!r} is not readable: {exc}") from None
    if values:
        try:
            state.value = feature_set.schema.model_validate(values)
        except ValidationError as exc:
            raise StateError(
                f"the stored state is not a valid {feature_set.schema.__name__}: {_first_error(exc)}"
            ) from None
    return state


def new_value(feature_set: FeatureSet, result: Any, entity: str) -> BaseModel:
    """The handler's result as the feature set's schema, for ``entity``; :class:`StateError` if not."""
    schema = feature_set.schema
    if isinstance(result, schema):
        value = result
    elif isinstance(result, Mapping | BaseModel):
        try:
            value = schema.model_validate(
                record_fields(result) if isinstance(result, BaseModel) else dict(result)
            )
        except ValidationError as exc:
            raise StateError(f"the new state is not a valid {schema.__name__}: {_first_error(exc)}") from None
    else:
        raise StateError(
            f"a stateful handler returns a {schema.__name__} or None, got {type(result).__name__}"
        )
    returned = getattr(value, feature_set.entity_key)
    try:
        same = entity_text(returned) == entity
    except EntityError:
        same = False
    if not same:
        raise StateError(
            f"the new state's {feature_set.entity_key} is {returned!r}, but the event's entity is {entity!r}"
        )
    return value


def advance(feature_set: FeatureSet, value: BaseModel, previous_ms: int | None) -> tuple[BaseModel, int]:
    """``value`` with an event time later than ``previous_ms``: a time that is not later becomes 1 ms
    after it, so the states of an entity are strictly ordered (the online store and the journal then agree
    on which one is current). The value and its event time in epoch milliseconds."""
    name = feature_set.event_time
    current = getattr(value, name)
    ms = epoch_ms(current)
    if previous_ms is None or ms > previous_ms:
        return value, ms
    ms = previous_ms + 1
    moved: Any = datetime.fromtimestamp(ms / 1000, UTC) if isinstance(current, datetime) else ms
    return value.model_copy(update={name: moved}), ms


def fields_of(state: EntityState) -> list[bytes | str]:
    """The hash fields to write for ``state`` (feature values, event time, applied offsets), flattened."""
    flat: list[bytes | str] = []
    if state.value is not None:
        for name, value in record_fields(state.value).items():
            flat += [name, json_field(value)]
    if state.event_ms is not None:
        flat += [EVENT_TIME_FIELD, str(state.event_ms)]
    for name, offset in state.applied.items():
        flat += [name, str(offset)]
    return flat


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"]) or "value"
    return f"{where}: {error['msg']}"
