from __future__ import annotations

import os
import string

import orjson
from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException, Request
from fastapi.responses import Response
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from thimble.modelops._http import RequestRoute, request_id

ALLOWED = set(string.ascii_letters + string.digits + "._:@/+=-")


def _reference_accepts(value: str) -> bool:
    return 1 <= len(value) <= 128 and all(c in ALLOWED for c in value)


@given(
    st.one_of(st.text(max_size=200), st.text(alphabet="".join(sorted(ALLOWED)) + '"\\\r\n{}', max_size=140))
)
def test_a_request_id_is_echoed_only_when_it_is_a_plain_token(value: str) -> None:
    got = request_id(value)
    if _reference_accepts(value):
        assert got == value
    else:
        assert got != value
        assert len(got) == 32
        assert set(got) <= set(string.hexdigits)
    assert orjson.loads(orjson.dumps({"request_id": got})) == {"request_id": got}


def test_a_missing_request_id_gets_a_fresh_one() -> None:
    assert request_id(None) != request_id(None)


def test_fresh_request_ids_of_a_forked_worker_never_repeat_its_parents() -> None:
    parent = [request_id(None) for _ in range(3)]
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write_end, " ".join(request_id(None) for _ in range(3)).encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    child = os.read(read_end, 1024).decode().split()
    os.close(read_end)
    assert len(child) == 3
    assert not set(child) & set(parent)
    assert {c[:20] for c in child}.isdisjoint(p[:20] for p in parent)


def test_a_request_route_still_runs_dependencies_and_special_parameters() -> None:
    app = FastAPI()
    ran: list[str] = []

    async def bare(request: Request) -> Response:
        return Response(request.url.path)

    def refuse() -> None:
        raise HTTPException(401, "no")

    async def guarded(request: Request) -> Response:
        return Response("never")

    async def with_task(request: Request, tasks: BackgroundTasks) -> Response:
        tasks.add_task(ran.append, "task")
        return Response("queued")

    app.router.add_api_route("/bare", bare, methods=["POST"], route_class_override=RequestRoute)
    app.router.add_api_route(
        "/guarded",
        guarded,
        methods=["POST"],
        dependencies=[Depends(refuse)],
        route_class_override=RequestRoute,
    )
    app.router.add_api_route("/task", with_task, methods=["POST"], route_class_override=RequestRoute)
    with TestClient(app) as client:
        assert client.post("/bare").text == "/bare"
        assert client.post("/guarded").status_code == 401
        assert client.post("/task").text == "queued"
    assert ran == ["task"]
