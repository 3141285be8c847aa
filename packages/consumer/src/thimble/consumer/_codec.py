"""Bytes to the handler's input type, and outputs back to bytes or to record fields.

JSON is parsed by orjson; pydantic models validate straight from the bytes (``model_validate_json``)
and serialise with their compiled serializer.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any

import orjson
from pydantic import BaseModel, TypeAdapter
from pydantic_core import SchemaValidator

from thimble.consumer.context import Output

Decoder = Callable[[bytes | None], Any]

_OPTS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_UTC_Z


class EmptyValue(ValueError):
    """The record has no value (a tombstone)."""


def _require(raw: bytes | None) -> bytes:
    if raw is None:
        raise EmptyValue("the record has no value (tombstone)")
    return raw


def make_decoder(tp: Any) -> Decoder:
    """A function decoding a record value into ``tp``; ``TypeError`` when ``tp`` cannot be decoded."""
    if tp is bytes:
        return lambda raw: b"" if raw is None else raw
    if tp is str:
        return lambda raw: _require(raw).decode("utf-8")
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        # The compiled validator itself (``model_validate_json`` adds a Python call per message);
        # a model not yet fully defined has a placeholder there, so it goes through the method.
        validator = tp.__pydantic_validator__
        validate = (
            validator.validate_json if isinstance(validator, SchemaValidator) else tp.model_validate_json
        )
        return lambda raw: validate(raw if raw is not None else _require(raw))
    if tp is dict or (typing.get_origin(tp) is dict and typing.get_args(tp) in ((), (str, Any))):

        def decode_dict(raw: bytes | None) -> Any:
            value = orjson.loads(_require(raw))
            if not isinstance(value, dict):
                raise ValueError(f"expected a JSON object, got {type(value).__name__}")
            return value

        return decode_dict
    if tp is Any:
        return lambda raw: orjson.loads(_require(raw))
    if tp is Output or tp is None or tp is type(None):
        raise TypeError(f"{tp!r} is not a message type")
    try:
        adapter: TypeAdapter[Any] = TypeAdapter(tp)
    except Exception as exc:
        raise TypeError(f"cannot decode messages into {tp!r} ({exc})") from None
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp):
        # ``Event | None``: the handler takes a tombstone (a deletion, on a compacted topic) as None.
        return lambda raw: None if raw is None else adapter.validate_json(raw)
    return lambda raw: adapter.validate_json(_require(raw))


def bytes_decoder(tp: Any) -> Callable[[bytes], Any] | None:
    """For a pydantic model: its compiled JSON validator, which decodes a present value in one call
    (:func:`make_decoder`'s decoder also handles a missing one); ``None`` for other types."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        validator = tp.__pydantic_validator__
        if isinstance(validator, SchemaValidator):
            return validator.validate_json
    return None


def outputs_of(result: Any) -> list[Any]:
    """A handler's return value as a list of outputs: ``None`` -> none, a list -> many."""
    if result is None:
        return []
    if isinstance(result, list | tuple):
        return [item for item in result if item is not None]
    if type(result).__name__ == "DataFrame" and hasattr(result, "to_dict"):
        return list(result.to_dict("records"))
    return [result]


def _json(value: Any) -> bytes:
    return orjson.dumps(value, option=_OPTS)


def _encoder_for(cls: type) -> Callable[[Any], bytes]:
    if issubclass(cls, BaseModel):
        return cls.__pydantic_serializer__.to_json
    if issubclass(cls, bytes):
        return bytes
    if issubclass(cls, str):
        return lambda v: v.encode("utf-8")
    return _json


_encoders: dict[type, Callable[[Any], bytes]] = {}


def encode_value(value: Any) -> bytes:
    """An output value as record bytes: models and JSON-able values as JSON, str as UTF-8, bytes as is."""
    cls = type(value)
    encoder = _encoders.get(cls)
    if encoder is None:
        encoder = _encoders[cls] = _encoder_for(cls)
    return encoder(value)


def plain_encoder(cls: type) -> Callable[[Any], bytes] | None:
    """:func:`encode_value` for an output of type ``cls`` that is one plain value (no :class:`Output`
    wrapper, list, tuple or DataFrame of outputs), else ``None``."""
    if cls is Output or issubclass(cls, list | tuple) or cls.__name__ == "DataFrame":
        return None
    encoder = _encoders.get(cls)
    if encoder is None:
        encoder = _encoders[cls] = _encoder_for(cls)
    return encoder


def encode_key(key: str | bytes | int | None) -> bytes | None:
    """An output key as bytes; any other type than ``str``, ``bytes`` or ``int`` raises :class:`TypeError`."""
    if key is None or isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, int) and not isinstance(key, bool):
        return str(key).encode("utf-8")
    raise TypeError(f"an output key must be str, bytes or int, not {type(key).__name__}")


def encode_headers(headers: Mapping[Any, Any]) -> list[tuple[str, bytes | None]] | None:
    """Output headers as Kafka headers (names ``str``, values ``str``, ``bytes`` or ``None``); any other
    type raises :class:`TypeError` naming the header."""
    out: list[tuple[str, bytes | None]] = []
    for name, value in headers.items():
        if not isinstance(name, str):
            raise TypeError(f"an output header name must be str, not {type(name).__name__}")
        if isinstance(value, str):
            value = value.encode("utf-8")
        elif value is not None and not isinstance(value, bytes):
            raise TypeError(f"output header {name!r} must be str, bytes or None, not {type(value).__name__}")
        out.append((name, value))
    return out or None


def record_fields(value: Any) -> dict[str, Any]:
    """An output as named fields (for the online store and landing files): a model, dataclass or dict."""
    if isinstance(value, BaseModel):
        return value.model_dump()
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(
        f"an output written to a record sink must be a pydantic model, dataclass or dict, got {type(value).__name__}"
    )


def json_field(value: Any) -> bytes:
    """One field value as JSON (the online store's per-field encoding)."""
    if isinstance(value, BaseModel):
        return encode_value(value)
    return orjson.dumps(value, option=_OPTS)


_MIN_MS = int(datetime(1, 1, 1, tzinfo=UTC).timestamp() * 1000)
_MAX_MS = int(datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC).timestamp() * 1000)


def epoch_ms(value: Any) -> int:
    """An event time (aware or naive-as-UTC datetime, date, epoch ms number, ISO string) as epoch ms."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return int(value.timestamp() * 1000)
    if isinstance(value, date):
        return int(datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp() * 1000)
    if isinstance(value, bool):
        raise TypeError("an event time cannot be a bool")
    if isinstance(value, int | float):
        if not _MIN_MS <= value <= _MAX_MS:  # NaN too: a time no datetime holds would outlast every other
            raise ValueError(f"event time {value!r} (epoch milliseconds) is outside the years 1 to 9999")
        return int(value)
    if isinstance(value, str):
        return epoch_ms(datetime.fromisoformat(value))
    raise TypeError(f"cannot read an event time from {type(value).__name__}")
