"""An app's handlers, topics, sinks and JSON schemas, as plain data."""

from __future__ import annotations

import re
import typing
from typing import Any

from pydantic import BaseModel, TypeAdapter

from thimble.common.features import landing_folder, online_key
from thimble.consumer.app import App
from thimble.consumer.config import ConsumerSettings
from thimble.consumer.sinks import Landing, OnlineStore, Topic


def _schema(tp: Any) -> dict[str, Any] | None:
    if tp is None:
        return None
    try:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            return tp.model_json_schema()
        return TypeAdapter(tp).json_schema()
    except Exception:
        return None


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    if isinstance(tp, type):
        return tp.__name__
    return re.sub(r"\b(?:\w+\.)+(\w+)", r"\1", str(tp))


def describe_app(app: App, settings: ConsumerSettings) -> dict[str, Any]:
    suffix = settings.consumer.dlq_suffix
    handlers = []
    for h in app.handlers:
        sinks: list[dict[str, Any]] = []
        if h.state is not None:
            fs = h.state.feature_set
            sinks.append(
                {
                    "kind": "state",
                    "name": fs.name,
                    "entity_key": fs.entity_key,
                    "event_time": fs.event_time,
                    "key_pattern": fs.online_key(settings.online_store.key_prefix, f"<{fs.entity_key}>"),
                }
            )
        for s in h.sinks:
            if isinstance(s, Topic):
                sinks.append({"kind": "topic", "name": s.name})
            elif isinstance(s, OnlineStore):
                sinks.append(
                    {
                        "kind": "online_store",
                        "name": s.feature_set,
                        "entity_key": s.entity_key,
                        "event_time": s.event_time,
                        "key_pattern": online_key(
                            settings.online_store.key_prefix, s.feature_set, f"<{s.entity_key}>"
                        ),
                    }
                )
            elif isinstance(s, Landing):
                sinks.append(
                    {
                        "kind": "landing",
                        "name": s.dataset,
                        "event_time": s.event_time,
                        "path": landing_folder(settings.warehouse.landing, s.dataset, "YYYY-MM-DD") + "/",
                    }
                )
        handlers.append(
            {
                "name": h.name,
                "where": h.where,
                "sources": list(h.sources),
                "input": (
                    "DataFrame"
                    if h.dataframe
                    else f"list[{_type_name(h.input_type)}]"
                    if h.batch
                    else _type_name(h.input_type)
                ),
                "batch": h.batch,
                "context": h.context_param is not None,
                "sinks": sinks,
                "dead_letter_topics": [h.dlq_topic(s, suffix) for s in h.sources],
                "input_schema": _schema(h.input_type) if h.input_type not in (bytes, str) else None,
                "output_schema": _schema(h.output_type),
            }
        )
    return {
        "app": app.name,
        "group_id": settings.consumer.group_id or app.name,
        "topics": {"sources": app.sources, "outputs": app.output_topics(settings)},
        "handlers": handlers,
    }
