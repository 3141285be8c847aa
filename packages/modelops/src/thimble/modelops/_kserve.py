"""The KServe V2 (Open Inference Protocol) routes, mapped onto the same prediction path as ``/v1``."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel

if TYPE_CHECKING:
    from thimble.modelops.server import ServedModel

JSON = "application/json"
_DATATYPES = {"number": "FP64", "integer": "INT64", "boolean": "BOOL", "string": "BYTES"}

_ERR = {
    "description": "error",
    "content": {JSON: {"schema": {"type": "object", "properties": {"error": {"type": "string"}}}}},
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid bearer token"},
    404: _ERR,
}
_INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_RESPONSES,
    400: _ERR,
    422: {"description": "Invalid tensors or rows"},
    500: _ERR,
}

Predict = Callable[["ServedModel", Any, bool, str, float], Awaitable["list[BaseModel] | Response"]]


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
            return f"input {tensor['name']!r} has {len(data)} values; every input needs the same number of rows (>= 1)"
        columns[tensor["name"]] = data
    assert n is not None
    names = list(columns)
    return [{name: columns[name][i] for name in names} for i in range(n)]


def add_kserve_routes(
    app: FastAPI,
    routes: dict[str, ServedModel],
    unauthorized: Callable[[Request], Response | None],
    predict: Predict,
) -> None:
    """``/v2/health/live``, ``/v2/health/ready``, ``/v2/models/{name}``, ``/v2/models/{name}/ready``, ``/v2/models/{name}/infer``."""

    @app.get("/v2/health/live", tags=["kserve-v2"], summary="Server is alive")
    async def live() -> Response:
        return Response(b'{"live":true}', media_type=JSON)

    @app.get("/v2/health/ready", tags=["kserve-v2"], summary="Server is ready")
    async def ready() -> Response:
        return Response(b'{"ready":true}', media_type=JSON)

    def find(name: str) -> ServedModel | Response:
        s = routes.get(name)
        if s is None:
            return _error(404, f"model {name!r} is not served here; served: {', '.join(sorted(routes))}")
        return s

    @app.get("/v2/models/{name}", tags=["kserve-v2"], summary="Model metadata", responses=_RESPONSES)
    async def metadata(name: str, request: Request) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
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

    @app.get("/v2/models/{name}/ready", tags=["kserve-v2"], summary="Model is ready", responses=_RESPONSES)
    async def model_ready(name: str) -> Response:
        s = find(name)
        return s if isinstance(s, Response) else Response(b'{"ready":true}', media_type=JSON)

    @app.post(
        "/v2/models/{name}/infer",
        tags=["kserve-v2"],
        summary="Inference (Open Inference Protocol)",
        responses=_INFER_RESPONSES,
    )
    async def infer(name: str, request: Request) -> Response:
        start = time.perf_counter()
        if (denied := unauthorized(request)) is not None:
            return denied
        s = find(name)
        if isinstance(s, Response):
            return s
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            return _error(400, f"the body is not valid JSON: {exc}")
        records = _records(body)
        if isinstance(records, str):
            return _error(422, records)
        request_id = str(body.get("id") or uuid.uuid4().hex)
        outputs = await predict(s, records, False, request_id, start)
        if isinstance(outputs, Response):
            return outputs
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
        return Response(
            orjson.dumps(
                {
                    "model_name": s.model.name,
                    "model_version": str(s.model.version),
                    "id": request_id,
                    "outputs": tensors,
                }
            ),
            media_type=JSON,
        )
