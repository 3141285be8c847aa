"""HTTP plumbing shared by the server's routers, declared once on the app.

- :class:`RequestIds` (middleware): every request gets an id, the caller's ``X-Request-Id`` only when it
  is a plain token, and every answer carries it back; routes take it as the :data:`RequestId` dependency.
- :class:`BodyLimit` (middleware): a body larger than ``max_body_bytes`` is a 413, refused as it streams in;
  a client that goes away before its body ends is one log line.
- :func:`bearer_auth`: the routers' auth dependency.
- :func:`add_routes`: a router's routes served from another's own table.
- :class:`RequestRoute`: a route whose endpoint takes the bare request, called without FastAPI's handler.
- :func:`json_response` and :func:`problem`: JSON answers built by a serialiser, never by pasting text.
"""

from __future__ import annotations

import hmac
import inspect
import itertools
import os
import re
import uuid
from collections.abc import Callable, Coroutine, Sequence
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from thimble.common.logging import get_logger
from thimble.modelops._names import shown

log = get_logger(__name__)
JSON = "application/json"
REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
REQUEST_ID_HEADER = b"x-request-id"

bearer_scheme = HTTPBearer(
    auto_error=False, description="`Authorization: Bearer <token>` when the server has a token"
)


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer serialised by orjson (nothing is ever pasted into a body as text)."""
    return Response(orjson.dumps(body), status_code=status, media_type=JSON, headers=headers)


def problem(status: int, msg: str, type_: str, loc: Sequence[Any] = ("body",)) -> Response:
    """A FastAPI-shaped error: ``{"detail": [{"loc", "msg", "type"}]}``."""
    return json_response(status, {"detail": [{"loc": list(loc), "msg": msg, "type": type_}]})


MAX_PROBLEMS = 100
"""The problems an answer lists at most; one more entry says how many there were in all."""


def problems_response(detail: Sequence[dict[str, Any]], total: int | None = None) -> Response:
    """A 422 listing the first :data:`MAX_PROBLEMS` of ``detail`` (``total`` problems in all, default
    ``len(detail)``); when there were more, a last entry of type ``too_many_problems`` says how many, with
    ``ctx: {"total", "listed"}``."""
    total = len(detail) if total is None else total
    listed = list(detail[:MAX_PROBLEMS])
    if total > len(listed):
        listed.append(
            {
                "loc": ["body"],
                "msg": f"{total} problems in all; the first {len(listed)} are listed",
                "type": "too_many_problems",
                "ctx": {"total": total, "listed": len(listed)},
            }
        )
    return json_response(422, {"detail": listed})


def problem_exception(status: int, msg: str, type_: str) -> HTTPException:
    """:func:`problem` as an exception a dependency raises."""
    return HTTPException(status, [{"loc": ["body"], "msg": msg, "type": type_}])


class _FreshIds:
    """Request ids unique across processes and restarts: a random prefix per process, then a counter."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.prefix = uuid.uuid4().hex[:20]
        self.counter = itertools.count()

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter):012x}"


_fresh_ids = _FreshIds()


def request_id(given: str | None) -> str:
    """The caller's request id when it is a plain token (letters, digits, ``._:@/+=-``, ≤ 128), else a new one."""
    if given is not None and REQUEST_ID.fullmatch(given):
        return given
    return _fresh_ids.next()


class RequestIds:
    """ASGI middleware: the request's id in ``scope["state"]["request_id"]`` and in every answer's header.

    The caller's ``X-Request-Id`` is kept only when :func:`request_id` accepts it; anything else is
    replaced by a fresh id before any route, log line or body can see it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == REQUEST_ID_HEADER), None)
        rid = request_id(given.decode("latin-1") if given is not None else None)
        scope.setdefault("state", {})["request_id"] = rid
        header = (REQUEST_ID_HEADER, rid.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != REQUEST_ID_HEADER]
                message["headers"] = [*headers, header]
            await send(message)

        await self.app(scope, receive, send_with_id)


def request_id_of(request: Request) -> str:
    """The request's id, set by :class:`RequestIds`."""
    rid: str = request.scope["state"]["request_id"]
    return rid


async def _request_id(request: Request) -> str:
    return request_id_of(request)


RequestId = Annotated[str, Depends(_request_id)]
"""The request's id (set by :class:`RequestIds`), as a route parameter."""


class BodyTooLarge(Exception):
    """The request body exceeds the configured limit."""


class BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` is a 413, refused by its ``Content-Length`` or as it streams in.

    The answer is a :func:`problem` (``{"error": …}`` on the KServe routes, as that protocol has it). A
    client that hangs up before its body ends gets no answer (there is no one to send it to), and the
    server logs one line at info, not an error with a traceback.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _refusal(self, scope: Scope) -> Response:
        msg = f"the body is larger than this server accepts ({self.max_bytes} bytes)"
        if str(scope.get("path", "")).startswith("/v2/"):
            return json_response(413, {"error": msg})
        return problem(413, msg, "body_too_large")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refusal(scope)(scope, receive, send)
            return
        size = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal size
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except BodyTooLarge:
            if started:
                raise
            await self._refusal(scope)(scope, receive, send)
        except ClientDisconnect:
            log.info(
                "client went away before sending its whole body",
                extra={
                    "path": shown(str(scope.get("path", ""))),
                    "request_id": scope.get("state", {}).get("request_id"),
                },
            )


def add_routes(target: APIRouter, router: APIRouter) -> None:
    """Serve ``router``'s routes from ``target``'s own route table, as if declared there.

    ``include_router`` keeps an included router as one route of ``target`` that matches a request twice
    (about 20 µs of a prediction). A route of an APIRouter already carries that router's dependencies,
    responses and tags, so the routes are added as they are.
    """
    target.routes.extend(router.routes)


class RequestRoute(APIRoute):
    """A route whose endpoint takes only the request and returns a response. With no dependencies to run
    (no token), the endpoint is called directly: FastAPI's request handler, made for endpoints with
    parameters to solve, costs more than the rest of a prediction. Otherwise FastAPI's handler runs them.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        direct = (
            not self.dependant.dependencies
            and self.dependant.request_param_name is not None
            and len(inspect.signature(self.endpoint).parameters) == 1
            and inspect.iscoroutinefunction(self.endpoint)
        )
        if direct:
            handler: Callable[[Request], Coroutine[Any, Any, Response]] = self.endpoint
            return handler
        return super().get_route_handler()


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
