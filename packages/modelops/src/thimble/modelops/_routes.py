"""The server's own routes: ``/v1`` predictions and model list, and the health routes."""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from thimble.modelops._http import (
    JSON,
    BodyTooLarge,
    bearer_auth,
    bind_path_param,
    json_response,
    problem,
    read_body,
    request_id,
    too_large,
)

if TYPE_CHECKING:
    from thimble.modelops.envelope import LoadedModel
    from thimble.modelops.server import Serving

OFFLOAD_BYTES = 256 * 1024  # bodies larger than this are parsed on a worker thread
UNAUTHORIZED = {
    "description": "Missing or invalid bearer token",
    "content": {JSON: {"schema": {"type": "object"}}},
}

ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "detail": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "loc": {"type": "array"},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        }
    },
}
_MESSAGE_SCHEMA = {"type": "object", "properties": {"detail": {}, "request_id": {"type": "string"}}}


def v1_router(serving: Serving, token: str | None, defs: dict[str, Any]) -> APIRouter:
    """``POST /v1/models/{ref}/predict`` (one documented route per served reference) and ``GET /v1/models``."""
    router = APIRouter(dependencies=bearer_auth(token), responses={401: UNAUTHORIZED})
    max_bytes = serving.cfg.max_body_bytes

    async def predict(request: Request) -> Response:
        start = time.perf_counter()
        ref = request.path_params["ref"]
        s = serving.routes.get(ref)
        if s is None:
            return json_response(
                404,
                {"detail": f"model {ref!r} is not served here; served: {', '.join(sorted(serving.routes))}"},
            )
        rid = request_id(request.headers.get("x-request-id"))
        try:
            body = await read_body(request, max_bytes)
        except BodyTooLarge:
            return too_large(max_bytes)
        try:
            parsed = (
                await asyncio.to_thread(orjson.loads, body)
                if len(body) > OFFLOAD_BYTES
                else orjson.loads(body)
            )
        except orjson.JSONDecodeError as exc:
            return problem(400, f"the body is not valid JSON: {exc}", "json_invalid")
        single = isinstance(parsed, dict)
        if single:
            records: list[Any] = [parsed]
        elif isinstance(parsed, list) and parsed:
            records = parsed
        else:
            return problem(
                422, "the body must be one row (a JSON object) or a non-empty array of rows", "body_shape"
            )
        s, outputs = await serving.answer(ref, records, single, rid, start)
        if isinstance(outputs, Response):
            return outputs
        out = await asyncio.to_thread(s.body, rid, outputs) if len(outputs) > 256 else s.body(rid, outputs)
        return Response(out, media_type=JSON, headers={"x-request-id": rid})

    for ref, s in sorted(serving.routes.items()):
        responses: dict[int | str, dict[str, Any]] = {
            200: {
                "description": "Predictions, one per input row",
                "content": {JSON: {"schema": _response_schema(s.model, defs)}},
            },
            400: {"description": "The body is not JSON", "content": {JSON: {"schema": ERROR_SCHEMA}}},
            413: {
                "description": "The body or its rows exceed the limits",
                "content": {JSON: {"schema": ERROR_SCHEMA}},
            },
            422: {
                "description": "A field is invalid, or a feature is missing",
                "content": {JSON: {"schema": ERROR_SCHEMA}},
            },
            500: {
                "description": "The model failed on this input (details in the server log)",
                "content": {JSON: {"schema": _MESSAGE_SCHEMA}},
            },
            503: {
                "description": "The online feature store is unreachable or too slow",
                "content": {JSON: {"schema": ERROR_SCHEMA}},
            },
        }
        router.add_api_route(
            f"/v1/models/{ref}/predict",
            bind_path_param(predict, "ref", ref),
            methods=["POST"],
            name=f"predict {ref}",
            summary=f"Predict with {ref} (version {s.model.version})",
            description=s.model.info.description if s.model.info else "",
            response_class=Response,
            responses=responses,
            openapi_extra={
                "parameters": [
                    {
                        "name": "x-request-id",
                        "in": "header",
                        "required": False,
                        "description": "echoed when it is 1-128 of letters, digits and ._:@/+=- ; else one is made",
                        "schema": {"type": "string"},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": _request_schema(s.model, defs)}},
                },
            },
            tags=["predict"],
        )
    router.add_api_route("/v1/models/{ref}/predict", predict, methods=["POST"], include_in_schema=False)

    @router.get("/v1/models", tags=["models"], summary="Served models")
    async def list_models() -> Response:
        return json_response(200, {ref: _summary(s.model) for ref, s in sorted(serving.routes.items())})

    return router


def health_router(serving: Serving, metrics_registry: CollectorRegistry) -> APIRouter:
    """``/healthz``, ``/readyz`` and ``/metrics`` (no auth: probes and scrapers)."""
    router = APIRouter(tags=["health"])
    multiproc = os.environ.get("PROMETHEUS_MULTIPROC_DIR")

    @router.get(
        "/healthz",
        summary="Process is alive",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def healthz() -> Response:
        return Response(b"ok\n", media_type="text/plain")

    @router.get(
        "/readyz",
        summary="Models loaded and the online store reachable",
        response_class=PlainTextResponse,
        responses={
            200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
            503: {"description": "Not ready", "content": {"text/plain": {"schema": {"type": "string"}}}},
        },
    )
    async def readyz() -> Response:
        problems = await serving.not_ready()
        if problems:
            return Response(
                ("not ready: " + "; ".join(problems) + "\n").encode(), 503, media_type="text/plain"
            )
        return Response(b"ready\n", media_type="text/plain")

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=PlainTextResponse,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
    )
    async def prometheus() -> Response:
        if multiproc:
            from prometheus_client import multiprocess

            combined = CollectorRegistry()
            multiprocess.MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
            return Response(generate_latest(combined), media_type=CONTENT_TYPE_LATEST)
        return Response(generate_latest(metrics_registry), media_type=CONTENT_TYPE_LATEST)

    return router


def _request_schema(model: LoadedModel, defs: dict[str, Any]) -> dict[str, Any]:
    schema = model.input_type.model_json_schema(ref_template="#/components/schemas/{model}")
    defs.update(schema.pop("$defs", {}))
    if model.features:
        fields = set(model.features.fields)
        schema["required"] = [f for f in schema.get("required", []) if f not in fields]
        schema["description"] = (
            f"Fields {', '.join(sorted(fields))} are filled from the online feature set "
            f"'{model.features.feature_set}' by '{model.features.entity_key}' when absent."
        )
    name = f"{model.name}-{model.version}-input".replace("-", "_")
    defs[name] = schema
    ref = {"$ref": f"#/components/schemas/{name}"}
    return {"oneOf": [ref, {"type": "array", "items": ref, "minItems": 1}]}


def _response_schema(model: LoadedModel, defs: dict[str, Any]) -> dict[str, Any]:
    schema = model.output_type.model_json_schema(ref_template="#/components/schemas/{model}")
    defs.update(schema.pop("$defs", {}))
    name = f"{model.name}-{model.version}-output".replace("-", "_")
    defs[name] = schema
    return {
        "type": "object",
        "required": ["model", "version", "request_id", "predictions"],
        "properties": {
            "model": {"type": "string"},
            "version": {"type": "integer"},
            "request_id": {"type": "string"},
            "predictions": {"type": "array", "items": {"$ref": f"#/components/schemas/{name}"}},
        },
    }


def _summary(m: LoadedModel) -> dict[str, Any]:
    return {
        "name": m.name,
        "version": m.version,
        "input_schema": m.input_type.model_json_schema(),
        "output_schema": m.output_type.model_json_schema(),
        "features": m.features.model_dump() if m.features else None,
        "training_data": str(m.info.context.training_data)
        if m.info and m.info.context.training_data
        else None,
        "environment_warnings": m.environment_warnings,
    }


def install_openapi(app: FastAPI, defs: dict[str, Any], names: list[str]) -> None:
    """Add the served models' input and output schemas to the OpenAPI components, their names to ``{name}``."""
    base = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = base()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(defs)
            for path, operations in schema.get("paths", {}).items():
                if "{name}" not in path:
                    continue
                for operation in operations.values():
                    for param in operation.get("parameters", []):
                        if param.get("name") == "name" and param.get("in") == "path":
                            param["schema"] = {"type": "string", "enum": names}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
