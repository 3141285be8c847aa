"""The model as a thimble-consumer batch handler: Kafka rows in, predictions out.

Each output record is the model's output fields plus ``_model``, ``_model_version`` and the input's
entity key (when the model declares features), keyed like the input message. Rows are validated as
strictly as an HTTP request; a row that does not match the model's input schema, or that the model
fails on, is dead-lettered alone, with the reason (a batch the model fails on is scored again row by
row), and the batch's other rows go on.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import TypeAdapter, ValidationError

from thimble.modelops.config import ModelOpsSettings
from thimble.modelops.envelope import LoadedModel, json_integers
from thimble.modelops.errors import ModelOpsError, PredictionError

if TYPE_CHECKING:
    from thimble.consumer import App

# orjson writes at most this many nested arrays or objects (deeper rows are dead-lettered, stage decode)
_MAX_NESTING = 254


def _consumer() -> Any:
    try:
        import thimble.consumer as consumer
    except ImportError:
        raise ModelOpsError(
            "streaming needs thimble-consumer: pip install 'thimble-modelops[stream]'"
        ) from None
    return consumer


def stream_app(
    model: LoadedModel,
    source: str,
    sink: str,
    *,
    group: str | None = None,
    batch_size: int | None = None,
    batch_wait_ms: int | None = None,
) -> App:
    """A thimble-consumer :class:`App` scoring ``source`` into ``sink`` with ``model``."""
    consumer = _consumer()
    app = consumer.App(group or f"thimble-modelops-{model.name}")
    key = model.features.entity_key if model.features else None
    extra = {"_model": model.name, "_model_version": model.version}

    row_adapter: TypeAdapter[Any] = TypeAdapter(model.input_type)

    def validated(raw: bytes | None) -> Any:
        """A row validated as strictly as an HTTP request is (no NaN or infinity, no "2.5" for a number),
        or the error that dead-letters it (this row alone: nothing here may fail the batch)."""
        if not raw:  # the consumer hands a batch handler a tombstone as b""
            return consumer.DecodeError("no value (a tombstone or an empty record), not a row")
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return consumer.DecodeError(f"not JSON: {exc}")
        try:
            as_json = orjson.dumps(json_integers(parsed))
        except (RecursionError, orjson.JSONEncodeError):
            return consumer.DecodeError(
                f"JSON nested more than {_MAX_NESTING} levels deep; a row may not nest deeper"
            )
        try:
            return row_adapter.validate_json(as_json, strict=True)
        except ValidationError as exc:
            return exc

    def outputs_of(rows: list[Any]) -> list[Any]:
        """One output per row; a row the model fails on (alone) gets its :class:`PredictionError`."""
        try:
            return model.check_finite(model.run(rows))
        except PredictionError as exc:
            if len(rows) == 1:
                return [exc]
        return [outputs_of([row])[0] for row in rows]

    def predict(raws: list[bytes], contexts: list[Any]) -> list[Any]:
        checked = [validated(raw) for raw in raws]
        rows = [row for row in checked if not isinstance(row, Exception)]
        outputs = iter(outputs_of(rows) if rows else [])
        records: list[Any] = []
        for row, ctx in zip(checked, contexts, strict=True):
            out = row if isinstance(row, Exception) else next(outputs)
            if isinstance(out, Exception):
                records.append(out)
                continue
            try:
                value = out.model_dump(mode="json") | extra
            except ValueError as exc:  # PydanticSerializationError; UnicodeDecodeError for bytes not UTF-8
                records.append(
                    PredictionError(f"model {model.ref} returned an output that is not JSON: {exc}")
                )
                continue
            if key is not None:
                value[key] = getattr(row, key)
            records.append(consumer.Output(value, key=ctx.key))
        return records

    predict.__annotations__ = {
        "raws": list[bytes],
        "contexts": list.__class_getitem__(consumer.Context),
        "return": list[Any],
    }
    predict.__name__ = predict.__qualname__ = f"predict_{model.name.replace('-', '_')}"
    app.handler(source, sink, batch_size=batch_size, batch_wait_ms=batch_wait_ms)(predict)
    result: App = app
    return result


def run_stream(
    model: LoadedModel,
    *,
    source: str,
    sink: str,
    group: str | None = None,
    settings: ModelOpsSettings | None = None,
    config_file: str | Path | None = None,
    create_topics: bool | None = None,
    exactly_once: bool | None = None,
) -> int:
    """Consume ``source`` until SIGTERM/SIGINT, producing predictions to ``sink``; return the exit code.

    ``create_topics`` and ``exactly_once`` override the consumer settings of that name when given.
    """
    from thimble.common.config import load_settings

    consumer = _consumer()
    app = stream_app(model, source, sink, group=group)
    overrides = {"consumer": {"create_topics": create_topics, "exactly_once": exactly_once}}
    consumer_settings = load_settings(consumer.ConsumerSettings, config_file, overrides)
    if settings is not None:
        consumer_settings = consumer_settings.model_copy(update={"kafka": settings.kafka})
    code: int = consumer.Runner(app, consumer_settings).run()
    return code
