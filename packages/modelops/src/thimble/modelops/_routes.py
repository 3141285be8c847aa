"""The server's own routes: ``/v1`` predictions and model list, and the health routes."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from thimble.modelops._http import (
    JSON,
    RequestRoute,
    bearer_auth,
    json_response,
    problem_exception,
    request_id_of,
)
from thimble.modelops._names import shown

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


@dataclass(frozen=True)
class Rows:
    """A prediction request's rows, and whether it sent one row as an object (answered as one)."""

    records: list[Any]
    single: bool


async def request_rows(request: Request) -> Rows:
    """Read a ``/v1`` body into :class:`Rows`: JSON, one row or a non-empty array of them, at most
    ``max_rows`` (413). Large bodies are parsed on a worker thread."""
    body = await request.body()
    try:
        parsed = (
            await asyncio.to_thread(orjson.loads, body) if len(body) > OFFLOAD_BYTES else orjson.loads(body)
        )
    except orjson.JSONDecodeError as exc:
        raise problem_exception(400, f"the body is not valid JSON: {exc}", "json_invalid") from None
    if isinstance(parsed, dict):
        return Rows([parsed], True)
    if not isinstance(parsed, list) or not parsed:
        raise problem_exception(
            422, "the body must be one row (a JSON object) or a non-empty array of rows", "body_shape"
        )
    max_rows = _serving(request).cfg.max_rows
    if len(parsed) > max_rows:
        raise problem_exception(
            413, f"{len(parsed)} rows; this server accepts at most {max_rows}", "too_many_rows"
        )
    return Rows(parsed, False)


def served_ref(request: Request) -> str:
    """The path's model reference, when it is served here (else 404)."""
    ref: str = request.path_params["ref"]
    routes = _serving(request).routes
    if ref not in routes:
        raise HTTPException(
            404, f"model {shown(ref)} is not served here; served: {', '.join(sorted(routes))}"
        )
    return ref


def _serving(request: Request) -> Serving:
    serving: Serving = request.app.state.serving
    return serving


def v1_router(serving: Serving, token: str | None) -> APIRouter:
    """``POST /v1/models/{ref}/predict`` (one documented route per served reference) and ``GET /v1/models``."""
    router = APIRouter(dependencies=bearer_auth(token), responses={401: UNAUTHORIZED})

    # The predict routes take the bare request (a RequestRoute): they are the hot path, and FastAPI's
    # dependency solving costs more than the rest of a request's own work.
    async def predict(ref: str, request: Request) -> Response:
        start = time.perf_counter()
        rows = await request_rows(request)
        rid = request_id_of(request)
        answer = await serving.answer(ref, rows.records, rows.single, rid, start)
        if isinstance(answer, Response):
            return answer
        big = len(answer.outputs) > 256
        out = await asyncio.to_thread(answer.body, rid) if big else answer.body(rid)
        return Response(out, media_type=JSON)

    def predict_route(ref: str) -> Callable[..., Awaitable[Response]]:
        async def predict_ref(request: Request) -> Response:
            return await predict(ref, request)

        return predict_ref

    async def predict_any(request: Request) -> Response:
        return await predict(served_ref(request), request)

    for ref, s in sorted(serving.routes.items()):
        responses: dict[int | str, dict[str, Any]] = {
            200: {
                "description": "Predictions, one per input row",
                "content": {JSON: {"schema": {"type": "object"}}},  # see install_openapi
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
            predict_route(ref),
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
                    "content": {JSON: {"schema": {}}},  # see install_openapi
                },
            },
            tags=["predict"],
            route_class_override=RequestRoute,
        )
    # references served after an alias move (name@version) have no documented route of their own
    router.add_api_route(
        "/v1/models/{ref}/predict",
        predict_any,
        methods=["POST"],
        include_in_schema=False,
        route_class_override=RequestRoute,
    )

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
        serving.flush_metrics()
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
            "versions": {
                "type": "array",
                "items": {"type": "integer"},
                "description": "the version that answered each row, when a canary answered some rows",
            },
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


def install_openapi(app: FastAPI, serving: Serving) -> None:
    """Document each served reference with the schemas of the version it serves now.

    The document is rebuilt when a served reference moves to another version (an alias move), so
    ``/openapi.json`` and ``/docs`` always describe what the server answers with.
    """
    base = app.openapi
    built_for: list[tuple[str, int | None]] = []

    def openapi() -> dict[str, Any]:
        served = sorted((ref, s.model.version) for ref, s in serving.routes.items())
        if app.openapi_schema is None or served != built_for:
            app.openapi_schema = None
            schema = base()
            defs: dict[str, Any] = {}
            for ref, s in serving.routes.items():
                operation = schema.get("paths", {}).get(f"/v1/models/{ref}/predict", {}).get("post")
                if operation is None:
                    continue  # a reference served after an alias move (name@version): undocumented
                operation["summary"] = f"Predict with {ref} (version {s.model.version})"
                operation["description"] = s.model.info.description if s.model.info else ""
                operation["requestBody"]["content"][JSON]["schema"] = _request_schema(s.model, defs)
                operation["responses"]["200"]["content"][JSON]["schema"] = _response_schema(s.model, defs)
            schema.setdefault("components", {}).setdefault("schemas", {}).update(defs)
            names = sorted(serving.routes)
            for path, operations in schema.get("paths", {}).items():
                if "{name}" not in path:
                    continue
                for operation in operations.values():
                    for param in operation.get("parameters", []):
                        if param.get("name") == "name" and param.get("in") == "path":
                            param["schema"] = {"type": "string", "enum": names}
            app.openapi_schema = schema
            built_for[:] = served
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
