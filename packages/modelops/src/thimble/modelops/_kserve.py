"""The KServe V2 (Open Inference Protocol) routes, mapped onto the same prediction path as ``/v1``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response

from thimble.modelops._http import JSON, REQUEST_ID, RequestId, add_routes, bearer_auth
from thimble.modelops._names import shown
from thimble.modelops._tensors import (
    DATATYPES,
    MAX_DIMENSIONS,
    TensorError,
    advertised,
    field_kinds,
    tensor_rows,
)

if TYPE_CHECKING:
    from thimble.modelops.server import ServedModel, Serving

_DATATYPES = {"number": "FP64", "integer": "INT64", "boolean": "BOOL", "string": "BYTES"}

_ERR = {
    "description": "error",
    "content": {JSON: {"schema": {"type": "object", "properties": {"error": {"type": "string"}}}}},
}
_INFER_REQUEST = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "inputs": {
            "type": "array",
            "minItems": 1,
            "description": "one tensor per input field of the model, each with the same number of rows",
            "items": {
                "type": "object",
                "required": ["name", "shape", "datatype", "data"],
                "properties": {
                    "name": {"type": "string"},
                    "shape": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": MAX_DIMENSIONS,
                        "items": {"type": "integer", "minimum": 0},
                        "description": "the number of rows first; the elements of data multiply to it",
                    },
                    "datatype": {"type": "string", "enum": list(DATATYPES)},
                    "data": {"type": "array", "description": "row-major, flat or nested as the shape"},
                },
            },
        },
        "outputs": {
            "type": "array",
            "description": "the outputs to answer with, in this order, each once (absent or empty: all)",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
            },
        },
    },
}
_READY = {
    "description": "ready",
    "content": {JSON: {"schema": {"type": "object", "properties": {"ready": {"type": "boolean"}}}}},
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {
        "description": "Missing or invalid bearer token",
        "content": {JSON: {"schema": {"type": "object"}}},
    },
    404: _ERR,
}
_INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_RESPONSES,
    400: {
        **_ERR,
        "description": "Not JSON, a tensor whose shape, datatype or data is wrong, or an output the model "
        "does not have",
    },
    413: {"description": "The body or its rows exceed the limits"},
    422: {"description": "Rows that the model's input does not accept"},
    500: _ERR,
    503: {"description": "The online feature store is unreachable or too slow"},
}


def _datatype(prop: dict[str, Any]) -> str:
    kind = prop.get("type")
    if kind is None:
        kinds = [p.get("type") for p in prop.get("anyOf", []) if p.get("type") != "null"]
        kind = kinds[0] if kinds else "string"
    return _DATATYPES.get(str(kind), "BYTES")


def _tensor_metadata(name: str, datatype: str, shape: list[int]) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape}


def _error(status: int, message: str) -> Response:
    return Response(orjson.dumps({"error": message}), status_code=status, media_type=JSON)


class InferError(Exception):
    """A refused KServe request, answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class InferRequest:
    """An ``/infer`` body as rows, with the ``id`` it gave (``None`` when absent): the answer echoes it as
    the protocol says; logs and records take it only when it is a plain token (:data:`REQUEST_ID`).
    ``outputs``: the outputs it asks for, in its order (empty: all of the model's)."""

    records: list[dict[str, Any]]
    id: str | None
    outputs: tuple[str, ...] = ()

    def log_id(self, header_id: str) -> str:
        """The request's id for logs and the prediction log: the body's when plain, else the header's."""
        return self.id if self.id is not None and REQUEST_ID.fullmatch(self.id) else header_id

    def output_names(self, fields: list[str]) -> list[str]:
        """The outputs to answer with, of a model whose outputs are ``fields``; a 400 for one it lacks."""
        for name in self.outputs:
            if name not in fields:
                raise InferError(
                    400,
                    f"output {shown(name)} is not an output of this model; its outputs: {', '.join(fields)}",
                )
        return list(self.outputs) or fields


def requested_outputs(given: Any) -> tuple[str, ...]:
    """The names of an ``/infer`` body's ``outputs`` (``[{"name": …}, …]``), in its order; a 400 for an
    entry that is not such an object, or a name asked twice."""
    if not isinstance(given, list):
        raise InferError(400, f"'outputs' must be a list of {{\"name\": …}} objects, not {shown(given)}")
    names: dict[str, None] = {}  # in order, each once
    for position, output in enumerate(given):
        if not isinstance(output, dict) or not isinstance(output.get("name"), str):
            raise InferError(400, f"output {position} needs a string 'name'")
        name = output["name"]
        if not isinstance(output.get("parameters", {}), dict):
            raise InferError(400, f"output {shown(name)}: 'parameters' must be an object")
        if name in names:
            raise InferError(400, f"output {shown(name)} is asked twice; ask each output once")
        names[name] = None
    return tuple(names)


async def served_name(request: Request, name: str) -> str:
    """The path's model name, when it is served here (else 404)."""
    serving: Serving = request.app.state.serving
    if name not in serving.routes:
        raise InferError(404, "no such model is served here")
    return name


ServedName = Annotated[str, Depends(served_name)]


async def infer_request(request: Request, name: ServedName) -> InferRequest:
    """Read an ``/infer`` body into rows (see :mod:`thimble.modelops._tensors`) and the outputs it asks
    for: a tensor that breaks the protocol or does not suit the model's input, or an output the model does
    not have, is a 400, more than ``max_rows`` rows a 413."""
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise InferError(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InferError(400, "the body must be an object with a non-empty 'inputs' list of tensors")
    given = body.get("id")
    if given is not None and not isinstance(given, str):
        raise InferError(400, f"'id' must be a string, not {shown(given)}")
    serving: Serving = request.app.state.serving
    model = serving.routes[name].model
    outputs = requested_outputs(body["outputs"]) if "outputs" in body else ()
    try:
        records = tensor_rows(body.get("inputs"), field_kinds(model.input_type))
    except TensorError as exc:
        raise InferError(400, str(exc)) from None
    max_rows = serving.cfg.max_rows
    if len(records) > max_rows:
        raise InferError(413, f"{len(records)} rows; this server accepts at most {max_rows}")
    infer = InferRequest(records, given, outputs)
    infer.output_names(model.output_fields)  # an unknown output is refused before the model runs
    return infer


def install_infer_errors(app: FastAPI) -> None:
    """Answer :class:`InferError` in the protocol's shape."""

    async def refuse(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, InferError)
        return _error(exc.status, exc.message)

    app.add_exception_handler(InferError, refuse)


Infer = Annotated[InferRequest, Depends(infer_request)]


def kserve_router(serving: Serving, token: str | None) -> APIRouter:
    """``/v2/health/live``, ``/v2/health/ready`` (no auth) and, behind auth, ``/v2/models/{name}``,
    ``/v2/models/{name}/ready``, ``/v2/models/{name}/infer``."""
    router = APIRouter(tags=["kserve-v2"])
    models = APIRouter(tags=["kserve-v2"], dependencies=bearer_auth(token), responses=_RESPONSES)

    @router.get("/v2/health/live", summary="Server is alive")
    async def live() -> Response:
        return Response(b'{"live":true}', media_type=JSON)

    @router.get(
        "/v2/health/ready",
        summary="Server is ready (as /readyz)",
        responses={200: _READY, 503: _READY},
    )
    async def ready() -> Response:
        ok = not await serving.not_ready()
        return Response(orjson.dumps({"ready": ok}), 200 if ok else 503, media_type=JSON)

    def find(name: str) -> ServedModel | Response:
        s = serving.routes.get(name)
        return s if s is not None else _error(404, "no such model is served here")

    @models.get("/v2/models/{name}", summary="Model metadata")
    async def metadata(name: str) -> Response:
        s = find(name)
        if isinstance(s, Response):
            return s
        kinds = field_kinds(s.model.input_type)
        outs = s.model.output_type.model_json_schema().get("properties", {})
        return Response(
            orjson.dumps(
                {
                    "name": s.model.name,
                    "versions": [str(s.model.version)],
                    "platform": "thimble",
                    "inputs": [_tensor_metadata(k, *advertised(kind)) for k, kind in kinds.items()],
                    "outputs": [
                        {"name": k, "datatype": _datatype(v), "shape": [-1]} for k, v in outs.items()
                    ],
                }
            ),
            media_type=JSON,
        )

    @models.get("/v2/models/{name}/ready", summary="Model is ready", responses={200: _READY, 503: _READY})
    async def model_ready(name: str) -> Response:
        s = find(name)
        if isinstance(s, Response):
            return s
        ok = serving.ready and (s.features is None or await s.features.ping())
        return Response(orjson.dumps({"ready": ok}), 200 if ok else 503, media_type=JSON)

    @models.post(
        "/v2/models/{name}/infer",
        summary="Inference (Open Inference Protocol)",
        responses=_INFER_RESPONSES,
        openapi_extra={"requestBody": {"required": True, "content": {JSON: {"schema": _INFER_REQUEST}}}},
    )
    async def infer(name: ServedName, infer: Infer, header_id: RequestId) -> Response:
        start = time.perf_counter()
        rid = infer.log_id(header_id)
        answer = await serving.answer(name, infer.records, False, rid, start)
        if isinstance(answer, Response):
            return answer
        s, outputs = answer.served, answer.outputs
        props = s.model.output_type.model_json_schema().get("properties", {})
        tensors = [
            {
                "name": f,
                "datatype": _datatype(props.get(f, {})),
                "shape": [len(outputs)],
                "data": [getattr(o, f) for o in outputs],
            }
            for f in infer.output_names(s.model.output_fields)  # a canary's outputs may differ
        ]
        out: dict[str, Any] = {
            "model_name": s.model.name,
            "model_version": str(s.model.version),
            "id": infer.id if infer.id is not None else rid,
            "outputs": tensors,
        }
        if answer.versions is not None:  # a canary answered some rows: each row's version
            out["parameters"] = {"versions": answer.versions}
        return Response(orjson.dumps(out), media_type=JSON)

    add_routes(router, models)
    return router
