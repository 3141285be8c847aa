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
                    "shape": {"type": "array", "items": {"type": "integer"}},
                    "datatype": {"type": "string"},
                    "data": {"type": "array"},
                },
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
    400: _ERR,
    413: {"description": "The body or its rows exceed the limits"},
    422: {"description": "Invalid tensors or rows"},
    500: _ERR,
    503: {"description": "The online feature store is unreachable or too slow"},
}


def _datatype(prop: dict[str, Any]) -> str:
    kind = prop.get("type")
    if kind is None:
        kinds = [p.get("type") for p in prop.get("anyOf", []) if p.get("type") != "null"]
        kind = kinds[0] if kinds else "string"
    return _DATATYPES.get(str(kind), "BYTES")


def _error(status: int, message: str) -> Response:
    return Response(orjson.dumps({"error": message}), status_code=status, media_type=JSON)


def _records(body: Any) -> list[dict[str, Any]] | str:
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or not body["inputs"]:
        return "the body must be an object with a non-empty 'inputs' list of tensors"
    columns: dict[str, list[Any]] = {}
    n: int | None = None
    for tensor in body["inputs"]:
        if (
            not isinstance(tensor, dict)
            or not isinstance(tensor.get("name"), str)
            or not isinstance(tensor.get("data"), list)
        ):
            return "each input needs 'name', 'shape', 'datatype' and 'data'"
        data = tensor["data"]
        if data and isinstance(data[0], list):
            data = [x for row in data for x in (row if isinstance(row, list) else [row])]
        if n is None:
            n = len(data)
        if len(data) != n or n == 0:
            return f"input {shown(tensor['name'])} has {len(data)} values; every input needs the same number of rows (>= 1)"
        columns[tensor["name"]] = data
    assert n is not None
    names = list(columns)
    return [{name: columns[name][i] for name in names} for i in range(n)]


class InferError(Exception):
    """A refused KServe request, answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class InferRequest:
    """An ``/infer`` body as rows, with the request id it gave (``None`` when absent or not a valid id)."""

    records: list[dict[str, Any]]
    id: str | None


async def served_name(request: Request, name: str) -> str:
    """The path's model name, when it is served here (else 404)."""
    serving: Serving = request.app.state.serving
    if name not in serving.routes:
        raise InferError(404, "no such model is served here")
    return name


async def infer_request(request: Request) -> InferRequest:
    """Read an ``/infer`` body into rows: tensors of one length each, at most ``max_rows`` rows (413)."""
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise InferError(400, f"the body is not valid JSON: {exc}") from None
    records = _records(body)
    if isinstance(records, str):
        raise InferError(422, records)
    max_rows = request.app.state.serving.cfg.max_rows
    if len(records) > max_rows:
        raise InferError(413, f"{len(records)} rows; this server accepts at most {max_rows}")
    given = body.get("id")
    return InferRequest(records, given if isinstance(given, str) and REQUEST_ID.fullmatch(given) else None)


def install_infer_errors(app: FastAPI) -> None:
    """Answer :class:`InferError` in the protocol's shape."""

    async def refuse(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, InferError)
        return _error(exc.status, exc.message)

    app.add_exception_handler(InferError, refuse)


ServedName = Annotated[str, Depends(served_name)]
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
        ins = s.model.input_type.model_json_schema().get("properties", {})
        outs = s.model.output_type.model_json_schema().get("properties", {})
        return Response(
            orjson.dumps(
                {
                    "name": s.model.name,
                    "versions": [str(s.model.version)],
                    "platform": "thimble",
                    "inputs": [{"name": k, "datatype": _datatype(v), "shape": [-1]} for k, v in ins.items()],
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
        rid = infer.id or header_id
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
            for f in s.model.output_fields
        ]
        out: dict[str, Any] = {
            "model_name": s.model.name,
            "model_version": str(s.model.version),
            "id": rid,
            "outputs": tensors,
        }
        if answer.versions is not None:  # a canary answered some rows: each row's version
            out["parameters"] = {"versions": answer.versions}
        return Response(orjson.dumps(out), media_type=JSON)

    add_routes(router, models)
    return router
