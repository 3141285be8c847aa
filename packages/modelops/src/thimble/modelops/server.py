"""The online prediction server: one FastAPI app serving several models and aliases.

Routes (see :mod:`thimble.modelops._routes` and :mod:`thimble.modelops._kserve`): ``POST
/v1/models/{ref}/predict`` (one row as an object, or many as an array), the KServe V2 ``POST
/v2/models/{name}/infer``, ``GET /v1/models``, ``/healthz``, ``/readyz``, ``/metrics``.
The request path is lean: orjson parse, one strict pydantic validation, micro-batched model call,
pydantic-core JSON dump; large requests are parsed, validated and run off the event loop; prediction
records are serialised in batches between requests, metric windows off the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.responses import Response
from fastapi.telemetry import TelemetryConfig
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ValidationError

from thimble.common.logging import get_logger
from thimble.common.metrics import Metrics, counter_buffer, histogram_buffer
from thimble.modelops.__about__ import __version__
from thimble.modelops._docs import install_docs
from thimble.modelops._http import (
    MAX_PROBLEMS,
    BodyLimit,
    RequestIds,
    add_routes,
    json_response,
    problem,
    problems_response,
)
from thimble.modelops._names import shown, shown_error
from thimble.modelops._prediction_log import PredictionLog
from thimble.modelops._rollout import AliasFollower, Split
from thimble.modelops._serving_stats import ServingStats
from thimble.modelops.batching import MicroBatcher
from thimble.modelops.config import OVERRIDES_ENV, ModelOpsSettings, load_modelops_settings
from thimble.modelops.envelope import LoadedModel, json_integers, numeric_fields
from thimble.modelops.errors import FeatureLookupError, ModelNotFoundError, PredictionError
from thimble.modelops.features import OnlineFeatures
from thimble.modelops.registry import ModelRef, Registry
from thimble.modelops.tracking import Tracker

log = get_logger(__name__)
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
VALUE_BUCKETS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 10.0, 100.0, 1000.0)
OFFLOAD_ROWS = 256  # requests with more rows are validated and serialised on a worker thread
MAX_NESTING = 253  # levels of a row: orjson writes 254 at most, and a chunk of rows is a list
VALIDATE_CHUNK = 1000  # rows per validation call, so a thread gives the event loop the GIL in between
METRICS_FLUSH_S = 1.0
NO_OPEN_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}
"""FastAPI's own OpenTelemetry off (``modelops.server.open_telemetry``)."""


class ServerMetrics:
    """The server's Prometheus series."""

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
            "prediction_log_dropped",
            "total",
            "Prediction records lost: never delivered to Kafka nor kept in the spill file",
            ["reason"],
        )
        self.log_spilled = m.counter(
            "prediction_log_spilled",
            "total",
            "Prediction records Kafka could not take, kept in the spill file to be re-sent",
        )
        self.log_resent = m.counter(
            "prediction_log_resent", "total", "Spilled prediction records handed to Kafka again"
        )


class ServedModel:
    """One loaded model version in the server, with its batcher, feature lookup and metric children."""

    def __init__(
        self, model: LoadedModel, settings: ModelOpsSettings, metrics: ServerMetrics, tracker: Tracker | None
    ) -> None:
        cfg = settings.modelops.server
        self.model = model
        self.version = str(model.version)
        self.features = (
            OnlineFeatures(
                model.features,
                settings.online_store,
                timeout_s=cfg.feature_timeout_ms / 1000.0,
                entity_type=model.input_type.model_fields[model.features.entity_key].annotation,
            )
            if model.features
            else None
        )
        # Observed on every request, written to Prometheus by flush_metrics (each scrape, every second).
        self.batch_rows = histogram_buffer(metrics.batch_rows.labels(model.name, self.version))
        self.latency = histogram_buffer(metrics.latency.labels(model.name, self.version))
        self.count = counter_buffer(metrics.predictions.labels(model.name, self.version))
        self.value_fields = [
            (f, histogram_buffer(metrics.values.labels(model.name, self.version, f)))
            for f in numeric_fields(model.output_type)
        ]
        run, check_finite = model.run, model.check_finite

        def run_checked(rows: list[BaseModel]) -> list[BaseModel]:
            # JSON has no NaN nor infinity: such an output is the model's failure, not a null in the answer
            return check_finite(run(rows))

        self.batcher: MicroBatcher[BaseModel, BaseModel] = MicroBatcher(
            run_checked,
            cfg.max_batch_size,
            cfg.max_wait_ms,
            cfg.run_in_thread,
            self.batch_rows.add,
            cfg.feature_hold_ms,
        )
        self.stats = ServingStats(model, tracker)
        self.metrics = metrics
        self.dump_rows = model.rows_adapter.dump_python
        self.dump_outputs = model.outputs_adapter.dump_python
        self.dump_json = model.outputs_adapter.dump_json
        self.in_flight = 0  # requests running on this version now (a retired version closes at 0)

    def validate(
        self, records: list[Any], single: bool, positions: list[int] | None = None
    ) -> list[BaseModel] | Refused:
        """The rows, validated as strictly as the published JSON schema says; or the field errors (the
        first :data:`MAX_PROBLEMS` of them, and how many there were in all).

        ``positions``: where each record stands in the request (when it is part of one), for the errors.
        """
        rows: list[BaseModel] = []
        refused = Refused([], 0)
        for start in range(0, len(records), VALIDATE_CHUNK):
            try:
                chunk = orjson.dumps([json_integers(r) for r in records[start : start + VALIDATE_CHUNK]])
            except (RecursionError, orjson.JSONEncodeError):
                return _too_deep(records, single, positions)
            try:
                rows.extend(self.model.rows_adapter.validate_json(chunk, strict=True))
            except ValidationError as exc:
                room = MAX_PROBLEMS - len(refused.detail)
                if room > 0:
                    refused.detail.extend(_validation_detail(exc, single, start, positions, room))
                refused.total += exc.error_count()
        return refused if refused.total else rows

    async def close(self) -> None:
        """Record the last serving window, stop the batcher and close the feature store's connections."""
        try:
            await self.record_stats()
        except Exception as exc:
            log.error(
                "serving metrics not recorded",
                extra={"model": self.model.ref, "error": f"{type(exc).__name__}: {exc}"},
            )
        self.batcher.close()
        self.flush_metrics()
        if self.features is not None:
            await self.features.close()

    async def record_stats(self) -> None:
        """Record the serving window so far: taken here, on the event loop that adds to it, and
        summarised in a thread."""
        window = self.stats.take()
        if window is not None:
            await asyncio.to_thread(self.stats.record, window)

    def flush_metrics(self) -> None:
        """Write the request metrics observed since the last flush to Prometheus."""
        self.batch_rows.flush()
        self.latency.flush()
        self.count.flush()
        for _field, values in self.value_fields:
            values.flush()

    def observe_values(self, outputs: list[BaseModel]) -> None:
        for field, hist in self.value_fields:
            for o in outputs:
                v = getattr(o, field)
                if v is not None:
                    hist.add(v)


@dataclass
class Refused:
    """Rows the model's input refuses: the problems to list, and how many there were in all."""

    detail: list[dict[str, Any]]
    total: int


@dataclass
class Answer:
    """The predictions of one request, and the version that answered (``versions``: each row's, when two did)."""

    served: ServedModel
    outputs: list[BaseModel]
    versions: list[int] | None = None

    def body(self, request_id: str) -> bytes:
        m = self.served.model
        out: dict[str, Any] = {
            "model": m.name,
            "version": m.version,
            "request_id": request_id,
            "predictions": orjson.Fragment(self.served.dump_json(self.outputs)),
        }
        if self.versions is not None:
            out["versions"] = self.versions
        return orjson.dumps(out)


def _too_deep(records: list[Any], single: bool, positions: list[int] | None) -> Refused:
    """The rows nested deeper than JSON is read here (orjson writes at most :data:`MAX_NESTING` levels)."""
    refused = Refused([], 0)
    for i, record in enumerate(records):
        try:
            orjson.dumps([json_integers(record)])
        except (RecursionError, orjson.JSONEncodeError):
            refused.total += 1
            loc = ["body"] if single else ["body", positions[i] if positions else i]
            msg = f"nested more than {MAX_NESTING} levels deep; a row may not nest deeper"
            refused.detail.append({"loc": loc, "msg": msg, "type": "json_too_deep"})
    return refused


def _validation_detail(
    exc: ValidationError,
    single: bool,
    offset: int = 0,
    positions: list[int] | None = None,
    limit: int = MAX_PROBLEMS,
) -> list[dict[str, Any]]:
    out = []
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    for err in errors[:limit]:
        loc, msg = shown_error(err)
        if loc and isinstance(loc[0], int):
            row = loc[0] + offset
            loc = loc[1:] if single else [positions[row] if positions else row, *loc[1:]]
        out.append({"loc": ["body", *loc], "msg": msg, "type": err["type"]})
    return out


class Serving:
    """What the routes share: the served models by reference, the prediction path, readiness."""

    def __init__(
        self,
        routes: dict[str, ServedModel],
        settings: ModelOpsSettings,
        metrics: ServerMetrics,
        prediction_log: PredictionLog | None,
    ) -> None:
        self.routes = routes
        self.by_version = {(s.model.name, s.model.version or 0): s for s in routes.values()}
        self.splits: dict[str, Split] = {}
        self.settings = settings
        self.cfg = settings.modelops.server
        self.metrics = metrics
        self.prediction_log = prediction_log
        self.ready = False
        self._shadows: set[asyncio.Task[Any]] = set()

    @property
    def served(self) -> list[ServedModel]:
        return list({id(s): s for s in self.routes.values()}.values())

    def flush_metrics(self) -> None:
        """Write the request metrics of every loaded version to Prometheus (before each scrape, and every
        :data:`METRICS_FLUSH_S`, so a scrape answered by another worker is at most that old)."""
        for s in {id(s): s for s in [*self.routes.values(), *self.by_version.values()]}.values():
            try:
                s.flush_metrics()
            except Exception as exc:  # a full disk under PROMETHEUS_MULTIPROC_DIR: serving goes on
                log.error(
                    "request metrics not written",
                    extra={"model": s.model.ref, "error": f"{type(exc).__name__}: {exc}"},
                )

    async def not_ready(self) -> list[str]:
        """Why the server cannot serve now (empty when ready)."""
        problems = [] if self.ready else ["starting"]
        for s in self.served:
            if s.features is not None and not await s.features.ping():
                problems.append(f"online store unreachable for {s.model.ref}")
        return problems

    async def answer(
        self, ref: str, records: list[Any], single: bool, request_id: str, start: float
    ) -> Answer | Response:
        """The answer to ``ref`` for this request, or an error answer.

        With a canary, each row goes to the version its entity falls to (:meth:`Split.canary_rows`), so
        one request may be answered by both. The shadow of ``ref``, if any, scores every row after.
        """
        s = self.routes[ref]
        split = self.splits.get(ref)
        if split is None:
            return await self.predict(s, records, single, request_id, start, ref)
        to_canary = split.canary_rows(records)
        answer: Answer | Response
        if not to_canary:
            answer = await self.predict(s, records, single, request_id, start, ref)
        elif len(to_canary) == len(records):
            assert split.canary is not None
            canary = self.routes[split.canary]
            answer = await self.predict(canary, records, single, request_id, start, split.canary, "canary")
        else:
            answer = await self._predict_split(s, ref, split, records, to_canary, request_id, start)
        if split.shadow is not None and not isinstance(answer, Response):
            shadow = self.routes[split.shadow]
            task = asyncio.get_running_loop().create_task(
                self.predict(shadow, records, single, request_id, time.perf_counter(), split.shadow, "shadow")
            )
            self._shadows.add(task)
            task.add_done_callback(self._shadows.discard)
        return answer

    async def _predict_split(
        self,
        primary: ServedModel,
        ref: str,
        split: Split,
        records: list[Any],
        to_canary: list[int],
        request_id: str,
        start: float,
    ) -> Answer | Response:
        """Rows ``to_canary`` on the canary, the others on ``primary``, answered in the request's order."""
        assert split.canary is not None
        taken = set(to_canary)
        to_primary = [i for i in range(len(records)) if i not in taken]
        canary = self.routes[split.canary]
        got = await asyncio.gather(
            self.predict(
                primary,
                [records[i] for i in to_primary],
                False,
                request_id,
                start,
                ref,
                "primary",
                to_primary,
            ),
            self.predict(
                canary,
                [records[i] for i in to_canary],
                False,
                request_id,
                start,
                split.canary,
                "canary",
                to_canary,
            ),
        )
        for part in got:
            if isinstance(part, Response):
                return part
        outputs: list[BaseModel] = [None] * len(records)  # type: ignore[list-item]
        versions = [0] * len(records)
        for part, positions in zip(got, (to_primary, to_canary), strict=True):
            assert isinstance(part, Answer)
            for i, out in zip(positions, part.outputs, strict=True):
                outputs[i] = out
                versions[i] = part.served.model.version or 0
        return Answer(primary, outputs, versions)

    async def predict(
        self,
        s: ServedModel,
        records: list[Any],
        single: bool,
        request_id: str,
        start: float,
        alias: str | None = None,
        role: str = "primary",
        positions: list[int] | None = None,
    ) -> Answer | Response:
        """Fill features, validate, run the model and record the request; an error answer on failure.

        ``positions``: where each record stands in the request, when these records are part of it.
        """
        s.in_flight += 1
        try:
            return await self._predict(s, records, single, request_id, start, alias, role, positions)
        finally:
            s.in_flight -= 1

    async def _predict(
        self,
        s: ServedModel,
        records: list[Any],
        single: bool,
        request_id: str,
        start: float,
        alias: str | None,
        role: str,
        positions: list[int] | None,
    ) -> Answer | Response:
        m = s.model
        with s.batcher.approaching():
            if s.features is not None:
                try:
                    defaulted = await s.features.fill(records)
                except FeatureLookupError as exc:
                    return self._feature_problem(s, exc, records, single, positions)
                for f, n in defaulted.items():
                    s.metrics.missing.labels(m.name, s.version, f, "defaulted").inc(n)
                    s.stats.missing_features[f] = s.stats.missing_features.get(f, 0) + n
            big = len(records) > OFFLOAD_ROWS
            checked = (
                await asyncio.to_thread(s.validate, records, single, positions)
                if big
                else s.validate(records, single, positions)
            )
            if isinstance(checked, Refused):
                s.metrics.errors.labels(m.name, s.version, "422").inc()
                return problems_response(checked.detail, checked.total)
        rows = checked
        try:
            outputs = await s.batcher.submit(rows)
        except PredictionError as exc:
            s.metrics.errors.labels(m.name, s.version, "500").inc()
            log.error(
                "prediction failed", extra={"model": m.ref, "request_id": request_id, "error": str(exc)}
            )
            return json_response(
                500,
                {
                    "detail": f"the model failed on this input (request {request_id})",
                    "request_id": request_id,
                },
            )
        latency = time.perf_counter() - start
        s.latency.add(latency)
        s.count.add(len(outputs))
        if big:
            await asyncio.to_thread(s.observe_values, outputs)
        else:
            s.observe_values(outputs)
        s.stats.add(latency, rows, outputs)
        if self.prediction_log is not None:
            self.prediction_log.put(
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
                    alias or m.ref,
                    role,
                )
            )
        return Answer(s, outputs)

    def _feature_problem(
        self,
        s: ServedModel,
        exc: FeatureLookupError,
        records: list[Any],
        single: bool,
        positions: list[int] | None,
    ) -> Response:
        m = s.model
        s.metrics.errors.labels(m.name, s.version, "422" if exc.missing else "503").inc()
        if not exc.missing:
            return problem(503, str(exc), "feature_store_unavailable")
        assert s.features is not None
        detail = []
        key = s.features.spec.entity_key
        for i, fields in exc.missing.items():
            for f in fields:
                s.metrics.missing.labels(m.name, s.version, f, "rejected").inc()
                detail.append(
                    {
                        "loc": ["body", f] if single else ["body", positions[i] if positions else i, f],
                        "msg": f"feature '{f}' of {key}={shown(records[i].get(key))} is not in the online store "
                        "and has no default; send it in the request or declare a default",
                        "type": "missing_feature",
                    }
                )
        return problems_response(detail)


def _load(
    settings: ModelOpsSettings, refs: Sequence[str] | None, registry: Registry | None
) -> tuple[list[LoadedModel], dict[str, LoadedModel], Registry]:
    registry = registry or Registry.from_config(settings.modelops)
    wanted = list(refs if refs is not None else settings.modelops.server.models)
    if not wanted:
        raise ModelNotFoundError(
            "no models to serve: name them (`thimble-modelops serve churn@prod`) or set modelops.server.models"
        )
    for ref, rollout in settings.modelops.server.rollout.items():
        name = ModelRef.parse(ref).name
        wanted += [f"{name}@{alias}" for alias in (rollout.canary, rollout.shadow) if alias is not None]
    loaded: dict[tuple[str, int], LoadedModel] = {}
    by_ref: dict[str, LoadedModel] = {}
    for ref in wanted:
        key = registry.resolve(ref)
        if key not in loaded:
            loaded[key] = registry.load(f"{key[0]}@{key[1]}")
        by_ref[str(ModelRef.parse(ref))] = loaded[key]
    return list(loaded.values()), by_ref, registry


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
    from thimble.modelops._kserve import install_infer_errors, kserve_router
    from thimble.modelops._routes import health_router, install_openapi, v1_router

    settings = settings or load_modelops_settings()
    cfg = settings.modelops.server
    by_ref: dict[str, LoadedModel] = {}
    if models is None:
        models, by_ref, registry = _load(settings, refs, registry)
    requested = list(by_ref)
    for m in models:
        by_ref.setdefault(m.ref, m)
        by_ref.setdefault(m.name, m)

    if metrics_registry is None:
        metrics_registry = CollectorRegistry()
    metrics = ServerMetrics(metrics_registry)
    tracker = (
        Tracker(settings.modelops.tracking_path()) if registry is None else Tracker.for_registry(registry)
    )

    def make_served(m: LoadedModel) -> ServedModel:
        return ServedModel(m, settings, metrics, tracker)

    served = {id(m): make_served(m) for m in models}
    plog = (
        PredictionLog(
            cfg.prediction_log_topic,
            settings.kafka.client_config(),
            cfg.prediction_log_queue,
            on_drop=lambda n, reason: metrics.log_dropped.labels(reason).inc(n),
            on_spill=metrics.log_spilled.inc,
            on_resend=metrics.log_resent.inc,
            spill_max_bytes=int(cfg.prediction_log_spill_mb * 1024 * 1024),
        )
        if cfg.prediction_log_topic
        else None
    )
    serving = Serving({ref: served[id(m)] for ref, m in by_ref.items()}, settings, metrics, plog)
    for ref, rollout in cfg.rollout.items():
        primary = serving.routes.get(str(ModelRef.parse(ref)))
        if primary is None:
            raise ModelNotFoundError(f"modelops.server.rollout names {ref!r}, which is not served")
        name = primary.model.name
        entity_key = rollout.entity_key or (
            primary.model.features.entity_key if primary.model.features else None
        )
        serving.splits[str(ModelRef.parse(ref))] = Split(
            f"{name}@{rollout.canary}" if rollout.canary else None,
            rollout.canary_share,
            f"{name}@{rollout.shadow}" if rollout.shadow else None,
            entity_key,
        )
    follower = (
        AliasFollower(serving, registry, make_served, requested)
        if registry is not None and cfg.alias_poll_s > 0
        else None
    )

    async def flush_stats() -> None:
        for s in serving.served:
            try:
                await s.record_stats()
            except Exception as exc:
                log.error(
                    "serving metrics not recorded",
                    extra={"model": s.model.ref, "error": f"{type(exc).__name__}: {exc}"},
                )

    async def track_forever() -> None:
        while True:
            await asyncio.sleep(cfg.tracking_interval_s)
            await flush_stats()

    async def flush_metrics_forever() -> None:
        while True:
            await asyncio.sleep(METRICS_FLUSH_S)
            serving.flush_metrics()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(track_forever())
        flushing = asyncio.create_task(flush_metrics_forever())
        following = asyncio.create_task(follower.follow_forever(cfg.alias_poll_s)) if follower else None
        if plog is not None:
            plog.start()
        # Models and artifacts live as long as the process: keep them out of the collector's scans (p99).
        gc.collect()
        gc.freeze()
        serving.ready = True
        log.info("serving", extra={"models": sorted(serving.routes)})
        try:
            yield
        finally:
            serving.ready = False
            task.cancel()
            flushing.cancel()
            if following is not None:
                following.cancel()
            if follower is not None and follower.closing:
                await asyncio.wait(follower.closing, timeout=10)
            for s in serving.served:
                await s.close()
            if plog is not None:
                await plog.close(cfg.prediction_log_flush_s)

    app = FastAPI(
        title="Thimble model server",
        version=__version__,
        description="Predictions from models in the Thimble registry: " + ", ".join(sorted(serving.routes)),
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        telemetry=None if cfg.open_telemetry else NO_OPEN_TELEMETRY,
    )
    app.add_middleware(BodyLimit, max_bytes=cfg.max_body_bytes)
    app.add_middleware(RequestIds)  # outermost: every answer carries the id, a refusal too
    app.state.serving = serving
    app.state.served = serving.routes
    app.state.prediction_log = plog
    app.state.flush_stats = flush_stats
    app.state.alias_follower = follower
    token = cfg.auth_token.get_secret_value() if cfg.auth_token else None
    add_routes(app.router, v1_router(serving, token))
    install_infer_errors(app)
    add_routes(app.router, kserve_router(serving, token))
    add_routes(app.router, health_router(serving, metrics_registry))
    install_docs(app, app.title)
    install_openapi(app, serving)
    return app


def app_from_settings() -> FastAPI:
    """uvicorn factory (``--factory``): the app for ``modelops.server.models`` from the environment's settings."""
    import json

    from thimble.common.logging import configure_logging
    from thimble.modelops._workers import die_with_parent

    die_with_parent()
    settings = load_modelops_settings(overrides=json.loads(os.environ.get(OVERRIDES_ENV, "{}")))
    configure_logging("modelops", __version__, settings.logging.level, settings.logging.format)
    return create_app(settings=settings)
