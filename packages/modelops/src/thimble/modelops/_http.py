"""HTTP plumbing shared by the server's routers: JSON answers, bearer auth, request ids, body limits."""

from __future__ import annotations

import hmac
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any

import orjson
from fastapi import Depends, HTTPException, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

JSON = "application/json"
REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")

bearer_scheme = HTTPBearer(
    auto_error=False, description="`Authorization: Bearer <token>` when the server has a token"
)


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer serialised by orjson (nothing is ever pasted into a body as text)."""
    return Response(orjson.dumps(body), status_code=status, media_type=JSON, headers=headers)


def problem(status: int, msg: str, type_: str, loc: Sequence[Any] = ("body",)) -> Response:
    """A FastAPI-shaped error: ``{"detail": [{"loc", "msg", "type"}]}``."""
    return json_response(status, {"detail": [{"loc": list(loc), "msg": msg, "type": type_}]})


def request_id(given: str | None) -> str:
    """The caller's request id when it is a plain token (letters, digits, ``._:@/+=-``, ≤ 128), else a new one."""
    if given is not None and REQUEST_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


def bearer_auth(token: str | None) -> list[Any]:
    """Route dependencies that require ``Authorization: Bearer <token>`` (none when no token is set)."""
    if token is None:
        return []
    expected = token.encode()

    async def require_token(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    ) -> None:
        if credentials is None or not hmac.compare_digest(credentials.credentials.encode(), expected):
            raise HTTPException(
                401, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    return [Depends(require_token)]


class BodyTooLarge(Exception):
    """The request body exceeds the configured limit."""


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The body, refused (:class:`BodyTooLarge`) as soon as it is known to exceed ``max_bytes``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def too_large(max_bytes: int) -> Response:
    return problem(413, f"the body is larger than this server accepts ({max_bytes} bytes)", "body_too_large")


Handler = Callable[[Request], Awaitable[Response]]


def bind_path_param(handler: Handler, name: str, value: str) -> Handler:
    """``handler`` with ``request.path_params[name]`` fixed to ``value`` (one documented route per model)."""

    async def bound(request: Request) -> Response:
        request.path_params[name] = value
        return await handler(request)

    return bound
