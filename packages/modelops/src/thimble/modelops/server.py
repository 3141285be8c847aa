"""The online prediction server: one FastAPI app serving several models and aliases.

Routes: ``POST /v1/models/{ref}/predict`` (one row as an object, or many as an array), the KServe V2
``POST /v2/models/{name}/infer``, ``GET /v1/models``, ``/healthz``, ``/readyz``, ``/metrics``.
The request path is lean: orjson parse, one pydantic validation, micro-batched model call, pydantic-core
JSON dump; prediction records are serialised in batches between requests, metric windows off the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ValidationError

from thimble.common.logging import get_logger
from thimble.common.metrics import Metrics
from thimble.modelops.__about__ import __version__
from thimble.modelops._prediction_log import PredictionLog
from thimble.modelops._serving_stats import ServingStats
from thimble.modelops.batching import MicroBatcher
from thimble.modelops.config import OVERRIDES_ENV, ModelOpsSettings, load_modelops_settings
from thimble.modelops.envelope import LoadedModel, numeric_fields
from thimble.modelops.errors import FeatureLookupError, ModelNotFoundError, PredictionError
from thimble.modelops.features import OnlineFeatures
from thimble.modelops.registry import ModelRef, Registry
from thimble.modelops.tracking import Tracker

log = get_logger(__name__)
JSON = "application/json"
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
VALUE_BUCKETS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 10.0, 100.0, 1000.0)


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON, headers=headers)


def _problem(status: int, msg: str, type_: str, loc: Sequence[Any] = ("body",)) -> Response:
    return _json(status, {"detail": [{"loc": list(loc), "msg": msg, "type": type_}]})


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        m = Metrics("modelops", registry)
        self.latency = m.histogram(
            "request_latency", "seconds", "Prediction request latency", ["model", "version"], LATENCY_BUCKETS
        )
        self.predictions = m.counter("predictions", "total", "Rows predicted", ["model", "version"])
        self.values = m.histogram(
            "prediction",
            "value",
            "Distribution of numeric predictions",
            ["model", "version", "field"],
            VALUE_BUCKETS,
        )
        self.errors = m.counter(
            "request", "errors", "Failed prediction requests", ["model", "version", "status"]
        )
        self.missing = m.counter(
            "missing_features",
            "total",
            "Feature values absent from the online store",
            ["model", "version", "feature", "outcome"],
        )
        self.batch_rows = m.histogram(
            "batch_size",
            "rows",
            "Rows per model call",
            ["model", "version"],
            (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024),
        )
        self.log_dropped = m.counter(
            "prediction_log_dropped", "total", "Prediction records dropped (queue full)"
        )


class ServedModel:
    """One loaded model version in the server, with its batcher, feature lookup and metric children."""

    def __init__(
        self, model: LoadedModel, settings: ModelOpsSettings, metrics: _Metrics, tracker: Tracker | None
    ) -> None:
        cfg = settings.modelops.server
        self.model = model
        self.version = str(model.version)
        self.features = OnlineFeatures(model.features, settings.online_store) if model.features else None
        self.batcher: MicroBatcher[BaseModel, BaseModel] = MicroBatcher(
            model.run,
            cfg.max_batch_size,
            cfg.max_wait_ms,
            cfg.run_in_thread,
            metrics.batch_rows.labels(model.name, self.version).observe,
        )
        self.stats = ServingStats(model, tracker)
        self.latency = metrics.latency.labels(model.name, self.version)
        self.count = metrics.predictions.labels(model.name, self.version)
        self.value_fields = [
            (f, metrics.values.labels(model.name, self.version, f)) for f in numeric_fields(model.output_type)
        ]
        self.metrics = metrics
        self.dump_rows = model.rows_adapter.dump_python
        self.dump_outputs = model.outputs_adapter.dump_python
        self.dump_json = model.outputs_adapter.dump_json
        self.prefix = orjson.dumps({"model": model.name, "version": model.version})[:-1] + b',"request_id":"'


def _validation_detail(exc: ValidationError, single: bool) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors(include_url=False, include_context=False):
        loc = list(err["loc"])
        if single and loc and isinstance(loc[0], int):
            loc = loc[1:]
        out.append({"loc": ["body", *loc], "msg": err["msg"], "type": err["type"]})
    return out


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


_ERROR_SCHEMA = {
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


def create_app(
    models: Sequence[LoadedModel] | None = None,
    settings: ModelOpsSettings | None = None,
    refs: Sequence[str] | None = None,
    registry: Registry | None = None,
    metrics_registry: CollectorRegistry | None = None,
) -> FastAPI:
    """The prediction app for ``models`` (loaded), or for ``refs`` (default: ``modelops.server.models``) from the registry.

    Each model is reachable by every reference it was asked by (``churn``, ``churn@prod``, ``churn@3``)
    and by ``name@version``.
    """
    settings = settings or load_modelops_settings()
    cfg = settings.modelops.server
    by_ref: dict[str, LoadedModel] = {}
    if models is None:
        registry = registry or Registry.from_config(settings.modelops)
        wanted = list(refs if refs is not None else cfg.models)
        if not wanted:
            raise ModelNotFoundError(
                "no models to serve: name them (`thimble-modelops serve churn@prod`) or set modelops.server.models"
            )
        loaded: dict[tuple[str, int], LoadedModel] = {}
        for ref in wanted:
            key = registry.resolve(ref)
            if key not in loaded:
                loaded[key] = registry.load(f"{key[0]}@{key[1]}")
            by_ref[str(ModelRef.parse(ref))] = loaded[key]
        models = list(loaded.values())
    for m in models:
        by_ref.setdefault(m.ref, m)
        by_ref.setdefault(m.name, m)

    multiproc = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if metrics_registry is None:
        metrics_registry = CollectorRegistry()
    metrics = _Metrics(metrics_registry)
    tracker = (
        Tracker(settings.modelops.tracking_path()) if registry is None else Tracker.for_registry(registry)
    )
    served: dict[int, ServedModel] = {}
    for m in models:
        served[id(m)] = ServedModel(m, settings, metrics, tracker)
    routes = {ref: served[id(m)] for ref, m in by_ref.items()}
    token = cfg.auth_token.get_secret_value().encode() if cfg.auth_token else None
    plog = (
        PredictionLog(
            cfg.prediction_log_topic,
            settings.kafka.client_config(),
            cfg.prediction_log_queue,
            metrics.log_dropped.inc,
        )
        if cfg.prediction_log_topic
        else None
    )
    state = {"ready": False}

    async def track_forever() -> None:
        while True:
            await asyncio.sleep(cfg.tracking_interval_s)
            await flush_stats()

    async def flush_stats() -> None:
        for s in served.values():
            try:
                await asyncio.to_thread(s.stats.flush)
            except Exception as exc:
                log.error(
                    "serving metrics not recorded",
                    extra={"model": s.model.ref, "error": f"{type(exc).__name__}: {exc}"},
                )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(track_forever())
        if plog is not None:
            plog.start()
        # Models and artifacts live as long as the process: keep them out of the collector's scans (p99).
        gc.collect()
        gc.freeze()
        state["ready"] = True
        log.info("serving", extra={"models": sorted(by_ref)})
        try:
            yield
        finally:
            state["ready"] = False
            task.cancel()
            await flush_stats()
            for s in served.values():
                s.batcher.close()
                if s.features:
                    await s.features.close()
            if plog is not None:
                await plog.close(cfg.prediction_log_flush_s)

    app = FastAPI(
        title="Thimble model server",
        version=__version__,
        description="Predictions from models in the Thimble registry: " + ", ".join(sorted(by_ref)),
        lifespan=lifespan,
    )
    app.state.served = routes
    app.state.prediction_log = plog
    app.state.flush_stats = flush_stats

    def unauthorized(request: Request) -> Response | None:
        if token is None:
            return None
        header = request.headers.get("authorization", "")
        if header[:7].lower() == "bearer " and hmac.compare_digest(header[7:].encode(), token):
            return None
        return Response(
            b'{"detail":"missing or invalid bearer token"}',
            401,
            media_type=JSON,
            headers={"WWW-Authenticate": "Bearer"},
        )

    async def predict_records(
        s: ServedModel, records: Any, single: bool, request_id: str, start: float
    ) -> list[BaseModel] | Response:
        m = s.model
        if s.features is not None and isinstance(records, list):
            try:
                defaulted = await s.features.fill(records)
            except FeatureLookupError as exc:
                s.metrics.errors.labels(m.name, s.version, "422" if exc.missing else "503").inc()
                if not exc.missing:
                    return _problem(503, str(exc), "feature_store_unavailable")
                detail = []
                key = s.features.spec.entity_key
                for i, fields in exc.missing.items():
                    for f in fields:
                        s.metrics.missing.labels(m.name, s.version, f, "rejected").inc()
                        detail.append(
                            {
                                "loc": ["body", f] if single else ["body", i, f],
                                "msg": f"feature '{f}' of {key}={records[i].get(key)!r} is not in the online store "
                                "and has no default; send it in the request or declare a default",
                                "type": "missing_feature",
                            }
                        )
                return _json(422, {"detail": detail})
            for f, n in defaulted.items():
                s.metrics.missing.labels(m.name, s.version, f, "defaulted").inc(n)
                s.stats.missing_features[f] = s.stats.missing_features.get(f, 0) + n
        try:
            rows = m.rows_adapter.validate_python(records)
        except ValidationError as exc:
            s.metrics.errors.labels(m.name, s.version, "422").inc()
            return _json(422, {"detail": _validation_detail(exc, single)})
        try:
            outputs = await s.batcher.submit(rows)
        except PredictionError as exc:
            s.metrics.errors.labels(m.name, s.version, "500").inc()
            log.error(
                "prediction failed", extra={"model": m.ref, "request_id": request_id, "error": str(exc)}
            )
            return _json(500, {"detail": str(exc), "request_id": request_id})
        latency = time.perf_counter() - start
        s.latency.observe(latency)
        s.count.inc(len(outputs))
        for field, hist in s.value_fields:
            for o in outputs:
                v = getattr(o, field)
                if v is not None:
                    hist.observe(v)
        s.stats.add(latency, rows, outputs)
        if plog is not None:
            plog.put(
                (
                    request_id,
                    m.name,
                    m.version,
                    int(time.time() * 1000),
                    latency * 1000.0,
                    rows,
                    outputs,
                    s.dump_rows,
                    s.dump_outputs,
                )
            )
        return outputs

    def lookup(ref: str) -> ServedModel | Response:
        s = routes.get(ref)
        if s is None:
            return _json(
                404, {"detail": f"model {ref!r} is not served here; served: {', '.join(sorted(routes))}"}
            )
        return s

    async def predict(request: Request) -> Response:
        start = time.perf_counter()
        if (denied := unauthorized(request)) is not None:
            return denied
        found = lookup(request.path_params["ref"])
        if isinstance(found, Response):
            return found
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        try:
            parsed = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            return _problem(400, f"the body is not valid JSON: {exc}", "json_invalid")
        single = isinstance(parsed, dict)
        if single:
            records: Any = [parsed]
        elif isinstance(parsed, list) and parsed:
            records = parsed
        else:
            return _problem(
                422, "the body must be one row (a JSON object) or a non-empty array of rows", "body_shape"
            )
        outputs = await predict_records(found, records, single, request_id, start)
        if isinstance(outputs, Response):
            return outputs
        body = found.prefix + request_id.encode() + b'","predictions":' + found.dump_json(outputs) + b"}"
        return Response(body, media_type=JSON, headers={"x-request-id": request_id})

    defs: dict[str, Any] = {}
    for ref, s in sorted(routes.items()):
        responses: dict[int | str, dict[str, Any]] = {
            200: {
                "description": "Predictions, one per input row",
                "content": {JSON: {"schema": _response_schema(s.model, defs)}},
            },
            400: {"description": "The body is not JSON", "content": {JSON: {"schema": _ERROR_SCHEMA}}},
            401: {"description": "Missing or invalid bearer token"},
            422: {
                "description": "A field is invalid, or a feature is missing",
                "content": {JSON: {"schema": _ERROR_SCHEMA}},
            },
            500: {"description": "The model failed on this input"},
            503: {"description": "The online feature store is unreachable"},
        }
        app.add_api_route(
            f"/v1/models/{ref}/predict",
            _bind_ref(predict, ref),
            methods=["POST"],
            name=f"predict {ref}",
            summary=f"Predict with {ref} (version {s.model.version})",
            description=s.model.info.description if s.model.info else "",
            response_class=Response,
            responses=responses,
            openapi_extra={
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": _request_schema(s.model, defs)}},
                }
            },
            tags=["predict"],
        )
    app.add_api_route("/v1/models/{ref}/predict", predict, methods=["POST"], include_in_schema=False)

    @app.get(
        "/v1/models",
        tags=["models"],
        summary="Served models",
        responses={401: {"description": "Missing or invalid bearer token"}},
    )
    async def list_models(request: Request) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        return _json(200, {ref: _summary(s.model) for ref, s in sorted(routes.items())})

    @app.get("/healthz", tags=["health"], summary="Process is alive")
    async def healthz() -> Response:
        return Response(b"ok\n", media_type="text/plain")

    @app.get("/readyz", tags=["health"], summary="Models loaded and the online store reachable")
    async def readyz() -> Response:
        problems = [] if state["ready"] else ["starting"]
        for s in served.values():
            if s.features is not None and not await s.features.ping():
                problems.append(f"online store unreachable for {s.model.ref}")
        if problems:
            return Response(
                ("not ready: " + "; ".join(problems) + "\n").encode(), 503, media_type="text/plain"
            )
        return Response(b"ready\n", media_type="text/plain")

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics")
    async def prometheus() -> Response:
        if multiproc:
            from prometheus_client import multiprocess

            combined = CollectorRegistry()
            multiprocess.MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
            return Response(generate_latest(combined), media_type=CONTENT_TYPE_LATEST)
        return Response(generate_latest(metrics_registry), media_type=CONTENT_TYPE_LATEST)

    from thimble.modelops._kserve import add_kserve_routes

    add_kserve_routes(app, routes, unauthorized, predict_records)
    _install_openapi(app, defs)
    return app


def _bind_ref(
    handler: Callable[[Request], Awaitable[Response]], ref: str
) -> Callable[[Request], Awaitable[Response]]:
    async def bound(request: Request) -> Response:
        request.path_params["ref"] = ref
        return await handler(request)

    return bound


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


def _install_openapi(app: FastAPI, defs: dict[str, Any]) -> None:
    base = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = base()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(defs)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def app_from_settings() -> FastAPI:
    """uvicorn factory (``--factory``): the app for ``modelops.server.models`` from the environment's settings."""
    import json

    from thimble.common.logging import configure_logging

    settings = load_modelops_settings(overrides=json.loads(os.environ.get(OVERRIDES_ENV, "{}")))
    configure_logging("modelops", __version__, settings.logging.level, settings.logging.format)
    return create_app(settings=settings)
