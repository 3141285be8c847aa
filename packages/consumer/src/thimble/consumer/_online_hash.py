"""An entity's hash in the online store, as the consumer writes it: the entity its key names, and the
fields the store keeps for itself.

Every writer of the hash (:class:`~thimble.consumer.sinks.OnlineStore`, ``@app.stateful``) forms the
key ``{key_prefix}:{feature_set}:{entity}`` (:func:`thimble.common.features.online_key`) from
:func:`entity_text` and keeps output fields off the :func:`reserved` names, so two entities never share
a hash and no feature overwrites the store's own fields.
"""

from __future__ import annotations

import math
import numbers
import uuid
from decimal import Decimal
from typing import Any

from thimble.common.features import EVENT_TIME_FIELD

APPLIED_PREFIX = "_applied:"
"""``_applied:{topic}:{partition}``: the highest offset of that partition applied to a stateful entity."""
VERSION_FIELD = "_version"
"""A stateful entity's version, compared and set by every write of its state."""
RESERVED = f"{EVENT_TIME_FIELD}, {VERSION_FIELD}, {APPLIED_PREFIX}*"
"""The store's own fields, as a message names them."""
MAX_ENTITY_CHARS = 512


class EntityError(ValueError):
    """A value that cannot name an entity of the online store."""


def reserved(name: str) -> bool:
    """Whether ``name`` is one of the store's own fields (:data:`RESERVED`), which no feature may be."""
    return name[:1] == "_" and (name in (EVENT_TIME_FIELD, VERSION_FIELD) or name.startswith(APPLIED_PREFIX))


def entity_text(entity: Any) -> str:
    """``entity`` as it appears in the online key: a non-empty string without control characters, or an
    integer (an integral float or decimal is that integer: ``42.0`` and ``42`` are one entity; a UUID is
    its canonical text). ``None``, a bool, any other number, a list, a dict... raise :class:`EntityError`."""
    cls = type(entity)
    text = entity if cls is str else str(entity) if cls is int else _other_text(entity)
    if not text or len(text) > MAX_ENTITY_CHARS or not text.isprintable():
        raise EntityError(
            f"entity {text[:40]!r} is empty, longer than {MAX_ENTITY_CHARS} characters or holds a control character"
        )
    return text


def _other_text(entity: Any) -> str:
    """:func:`entity_text` of anything but a plain ``str`` or ``int``."""
    if isinstance(entity, str):
        return str.__str__(entity)  # a str enum's value, as JSON has it
    if isinstance(entity, uuid.UUID):
        return str(entity)
    if isinstance(entity, bool) or not isinstance(entity, numbers.Real | Decimal):
        what = "None" if entity is None else type(entity).__name__
        raise EntityError(f"an entity must be a string or an integer, got {what}")
    if isinstance(entity, numbers.Integral):
        return str(int(entity))
    if math.isfinite(entity) and entity == (whole := math.trunc(entity)):
        return str(whole)
    raise EntityError(f"an entity must be a string or an integer, got the {type(entity).__name__} {entity}")
