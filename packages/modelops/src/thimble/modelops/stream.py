"""The model as a thimble-consumer batch handler: Kafka rows in, predictions out.

Each output record is the model's output fields plus ``_model``, ``_model_version`` and the input's
entity key (when the model declares features), keyed like the input message. Rows that do not match
the model's input schema are dead-lettered by the consumer, with the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from thimble.modelops.config import ModelOpsSettings
from thimble.modelops.envelope import LoadedModel
from thimble.modelops.errors import ModelOpsError

if TYPE_CHECKING:
    from thimble.consumer import App


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

    def predict(rows: list[Any], contexts: list[Any]) -> list[Any]:
        outputs = model.run(rows)
        records = []
        for row, out, ctx in zip(rows, outputs, contexts, strict=True):
            value = out.model_dump(mode="json") | extra
            if key is not None:
                value[key] = getattr(row, key)
            records.append(consumer.Output(value, key=ctx.key))
        return records

    predict.__annotations__ = {
        "rows": list.__class_getitem__(model.input_type),
        "contexts": list.__class_getitem__(consumer.Context),
        "return": list.__class_getitem__(consumer.Output),
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
) -> int:
    """Consume ``source`` until SIGTERM/SIGINT, producing predictions to ``sink``; return the exit code."""
    from thimble.common.config import load_settings

    consumer = _consumer()
    app = stream_app(model, source, sink, group=group)
    consumer_settings = load_settings(consumer.ConsumerSettings, config_file)
    if settings is not None:
        consumer_settings = consumer_settings.model_copy(update={"kafka": settings.kafka})
    code: int = consumer.Runner(app, consumer_settings).run()
    return code
