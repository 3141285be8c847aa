"""The server under hostile input: request ids, body and row limits, a hung store, strict validation."""

from __future__ import annotations

import asyncio
import logging
import socket
import string
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, field_validator

from thimble.modelops import ModelContext, Registry, model
from thimble.modelops.config import load_modelops_settings
from thimble.modelops.server import create_app
from thimble.testing import wait_until

pytestmark = pytest.mark.integration

ROW = {"client_id": 1, "orders_7d": 2, "spend_7d": 30.0}
TOKEN = "tok-safety-0123456789"


class StrictIn(BaseModel):
    amount: float = Field(ge=0)
    active: bool
    count: int = Field(ge=0, le=1000)


class StrictOut(BaseModel):
    y: float


@model(name="strict")
def strict_model(ctx: ModelContext, rows: list[StrictIn]) -> list[StrictOut]:
    """Fails with an internal message on count 13."""
    if any(r.count == 13 for r in rows):
        raise ValueError("internal secret: table t_42 unreachable")
    return [StrictOut(y=r.amount * 2 + r.count) for r in rows]


class ClosedIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: float
    tags: dict[str, int] = {}
    note: str = ""

    @field_validator("note")
    @classmethod
    def short(cls, note: str) -> str:
        if len(note) > 10:
            raise ValueError(f"note {note} is too long")  # quotes the input: cut in the answer
        return note


@model(name="closed")
def closed_model(ctx: ModelContext, rows: list[ClosedIn]) -> list[StrictOut]:
    """Refuses fields it does not declare."""
    return [StrictOut(y=r.amount) for r in rows]


def _settings(registry: Registry, redis_url: str, **server: Any) -> Any:
    return load_modelops_settings(
        overrides={
            "online_store": {"url": redis_url, "key_prefix": f"test-{uuid.uuid4().hex[:8]}"},
            "modelops": {"registry": registry.url, "server": server},
        }
    )


@pytest.fixture
def hung_port() -> Iterator[int]:
    """A loopback port whose listener accepts connections (kernel backlog) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield s.getsockname()[1]


ALLOWED = set(string.ascii_letters + string.digits + "._:@/+=-")
HEADER_TEXT = st.text(
    alphabet=st.sampled_from(sorted(ALLOWED) + list("\"\\{}[],: '<>%$#!`~")), min_size=1, max_size=160
)


def test_a_request_id_header_cannot_change_the_answer(
    saved_churn: Registry, redis_url: str, live: Callable[..., Any]
) -> None:
    server = live(
        create_app(settings=_settings(saved_churn, redis_url), refs=["churn@prod"], registry=saved_churn)
    )
    expected = saved_churn.load("churn@1").predict([ROW])
    with httpx.Client(base_url=server.url, timeout=10) as http:

        def check(header: str) -> None:
            got = http.post("/v1/models/churn@prod/predict", json=ROW, headers={"x-request-id": header})
            assert got.status_code == 200
            body = orjson.loads(got.content)
            assert set(body) == {"model", "version", "request_id", "predictions"}
            assert (body["model"], body["version"], body["predictions"]) == ("churn", 1, expected)
            assert got.headers["x-request-id"] == body["request_id"]
            plain = 1 <= len(header) <= 128 and set(header) <= ALLOWED
            assert (body["request_id"] == header) is plain

        check('abc","model":"evil","version":99,"x":"')
        check('"')
        check("r-1:a/b@c")

        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
        @given(HEADER_TEXT.map(str.strip).filter(bool))
        def property_holds(header: str) -> None:
            check(header)

        property_holds()


def test_every_answer_carries_a_checked_request_id_and_no_log_line_sees_a_hostile_one(
    registry: Registry, redis_url: str, live: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    registry.save(strict_model, pickle_function=True)
    server = live(
        create_app(
            settings=_settings(registry, redis_url, auth_token=TOKEN, max_body_bytes=2000),
            refs=["strict"],
            registry=registry,
        )
    )
    auth = {"authorization": f"Bearer {TOKEN}"}
    hostile = 'evil"\r\nx-injected: 1 {"model":"x"}'
    row = {"amount": 1.0, "active": True, "count": 1}
    with httpx.Client(base_url=server.url, timeout=10) as http:
        answers = {
            "401": http.post("/v1/models/strict/predict", json=row, headers={"x-request-id": "id-401"}),
            "404": http.post("/v1/models/nope/predict", json=row, headers=auth | {"x-request-id": "id-404"}),
            "413": http.post(
                "/v1/models/strict/predict", content=b" " * 3000, headers=auth | {"x-request-id": "id-413"}
            ),
            "422": http.post(
                "/v1/models/strict/predict", json={"amount": "1"}, headers=auth | {"x-request-id": "id-422"}
            ),
            "200": http.post(
                "/v1/models/strict/predict", json=row, headers=auth | {"x-request-id": "id-200"}
            ),
            "kserve": http.get("/v2/models/strict", headers=auth | {"x-request-id": "id-kserve"}),
            "healthz": http.get("/healthz", headers={"x-request-id": "id-healthz"}),
        }
        for name, got in answers.items():
            assert got.headers.get("x-request-id") == f"id-{name}", (name, got.status_code)
        assert [answers[s].status_code for s in ("401", "404", "413", "422", "200")] == [
            401,
            404,
            413,
            422,
            200,
        ]
        with caplog.at_level(logging.DEBUG):
            failing = http.post(
                "/v1/models/strict/predict",
                json=row | {"count": 13},
                headers=auth | {"x-request-id": hostile.replace("\r\n", " ")},
            )
            assert failing.status_code == 500
            fresh = failing.headers["x-request-id"]
            assert fresh == failing.json()["request_id"] != hostile.replace("\r\n", " ")
            wait_until(
                lambda: any(getattr(r, "request_id", None) == fresh for r in caplog.records),
                10,
                what="the failure to be logged with the fresh request id",
            )
        assert "evil" not in failing.text
        assert not [r for r in caplog.records if "evil" in r.getMessage() or "evil" in str(r.__dict__)]


def test_bodies_and_row_counts_over_the_limits_are_refused(
    saved_churn: Registry, redis_url: str, live: Callable[..., Any]
) -> None:
    app = create_app(
        settings=_settings(saved_churn, redis_url, max_body_bytes=4000, max_rows=5),
        refs=["churn@prod"],
        registry=saved_churn,
    )
    server = live(app)
    with httpx.Client(base_url=server.url, timeout=10) as http:
        assert http.post("/v1/models/churn@prod/predict", json=[ROW] * 5).status_code == 200
        rows = http.post("/v1/models/churn@prod/predict", json=[ROW] * 6)
        assert rows.status_code == 413
        assert rows.json()["detail"][0]["type"] == "too_many_rows"
        declared = http.post("/v1/models/churn@prod/predict", content=b"[" + b" " * 5000 + b"]")
        assert declared.status_code == 413
        assert declared.json()["detail"][0]["type"] == "body_too_large"

        def chunks() -> Iterator[bytes]:  # no Content-Length: refused while it streams
            yield b"["
            for _ in range(100):
                yield orjson.dumps(ROW) + b","
            yield orjson.dumps(ROW) + b"]"

        streamed = http.post("/v1/models/churn@prod/predict", content=chunks())
        assert streamed.status_code == 413
        tensor = {"name": "client_id", "shape": [6], "datatype": "INT64", "data": [1] * 6}
        assert http.post("/v2/models/churn/infer", json={"inputs": [tensor]}).status_code == 413
        big = {"inputs": [{"name": "client_id", "shape": [2000], "datatype": "INT64", "data": [1] * 2000}]}
        assert http.post("/v2/models/churn/infer", json=big).status_code == 413


def test_healthz_answers_while_a_large_request_is_in_flight(
    saved_churn: Registry, redis_url: str, live: Callable[..., Any]
) -> None:
    app = create_app(
        settings=_settings(saved_churn, redis_url, max_rows=100_000, max_body_bytes=64 * 1024 * 1024),
        refs=["churn@prod"],
        registry=saved_churn,
    )
    server = live(app)
    body = orjson.dumps(
        [{"client_id": i, "orders_7d": i % 20, "spend_7d": float(i % 97)} for i in range(100_000)]
    )
    result: dict[str, Any] = {}

    def send_large() -> None:
        with httpx.Client(base_url=server.url, timeout=120) as http:
            got = http.post("/v1/models/churn@prod/predict", content=body)
            result["status"] = got.status_code
            result["rows"] = len(got.json()["predictions"])

    sender = threading.Thread(target=send_large)
    latencies: list[float] = []
    with httpx.Client(base_url=server.url, timeout=30) as http:
        sender.start()
        while sender.is_alive():
            start = time.monotonic()
            assert http.get("/healthz").status_code == 200
            latencies.append(time.monotonic() - start)
            time.sleep(0.01)
    sender.join()
    assert result == {"status": 200, "rows": 100_000}
    assert len(latencies) >= 3  # the large request was in flight for several probes
    assert max(latencies) < 1.0, latencies


def test_a_hung_online_store_is_a_503_within_the_feature_timeout(
    saved_churn: Registry, hung_port: int, live: Callable[..., Any]
) -> None:
    app = create_app(
        settings=_settings(
            saved_churn, f"redis://127.0.0.1:{hung_port}/0", feature_timeout_ms=300, auth_token=TOKEN
        ),
        refs=["churn@prod"],
        registry=saved_churn,
    )
    server = live(app)
    auth = {"Authorization": f"Bearer {TOKEN}"}

    async def fire() -> tuple[list[httpx.Response], float]:
        async with httpx.AsyncClient(base_url=server.url, headers=auth, timeout=30) as http:
            start = time.monotonic()
            answers = await asyncio.gather(
                *(http.post("/v1/models/churn@prod/predict", json={"client_id": i}) for i in range(8))
            )
            return list(answers), time.monotonic() - start

    answers, elapsed = asyncio.run(fire())
    assert [a.status_code for a in answers] == [503] * 8
    assert "no answer within 300 ms" in answers[0].json()["detail"][0]["msg"]
    assert elapsed < 3.0  # far below the 5-9 s a hung store took before the timeout was enforced
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.post("/v1/models/churn@prod/predict", json=ROW, headers=auth).status_code == 200
        assert http.get("/readyz").status_code == 503
        assert http.get("/v2/health/ready").status_code == 503
        assert http.get("/v2/health/ready").json() == {"ready": False}
        assert http.get("/v2/models/churn/ready", headers=auth).status_code == 503


def test_kserve_readiness_agrees_with_readyz_and_model_routes_need_auth(
    saved_churn: Registry, redis_url: str, live: Callable[..., Any]
) -> None:
    server = live(
        create_app(
            settings=_settings(saved_churn, redis_url, auth_token=TOKEN),
            refs=["churn@prod"],
            registry=saved_churn,
        )
    )
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=server.url, timeout=10) as http:
        assert http.get("/readyz").status_code == 200
        assert http.get("/v2/health/ready").json() == {"ready": True}
        assert http.get("/v2/models/churn/ready").status_code == 401
        assert http.get("/v2/models/churn").status_code == 401
        assert http.get("/v2/models/churn/ready", headers=auth).json() == {"ready": True}
        unknown = http.get("/v2/models/nope/ready", headers=auth)
        assert unknown.status_code == 404
        assert "churn" not in unknown.text
        assert http.get("/v2/models/nope/ready").status_code == 401


def test_validation_is_as_strict_as_the_published_schema(
    registry: Registry, redis_url: str, live: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    registry.save(strict_model, pickle_function=True)
    server = live(create_app(settings=_settings(registry, redis_url), refs=["strict"], registry=registry))
    good = {"amount": 1.5, "active": True, "count": 2}
    with httpx.Client(base_url=server.url, timeout=10) as http:
        ok = http.post("/v1/models/strict/predict", json=good)
        assert ok.status_code == 200
        assert ok.json()["predictions"] == [{"y": 5.0}]
        assert http.post("/v1/models/strict/predict", json=good | {"amount": 3}).status_code == 200
        whole = http.post(
            "/v1/models/strict/predict", json=good | {"count": 4.0}
        )  # an integer in JSON Schema
        assert whole.json()["predictions"] == [{"y": 7.0}]
        for field, value in [
            ("amount", "12.5"),
            ("amount", "Infinity"),
            ("amount", True),
            ("active", "yes"),
            ("active", 1),
            ("count", False),
            ("count", "3"),
            ("count", 2.5),
        ]:
            bad = http.post("/v1/models/strict/predict", json=good | {field: value})
            assert bad.status_code == 422, (field, value, bad.text)
            assert bad.json()["detail"][0]["loc"] == ["body", field]
        assert http.post("/v1/models/strict/predict", content=b'{"amount": 1e999}').status_code == 400
        many = http.post("/v1/models/strict/predict", json=[good] * 1500 + [good | {"count": "x"}])
        assert [d["loc"] for d in many.json()["detail"]] == [["body", 1500, "count"]]
        with caplog.at_level(logging.ERROR):
            failed = http.post(
                "/v1/models/strict/predict", json=good | {"count": 13}, headers={"x-request-id": "req-13"}
            )
            assert failed.status_code == 500
            assert "secret" not in failed.text
            assert failed.json()["request_id"] == "req-13"
            wait_until(
                lambda: any("t_42" in str(getattr(r, "error", "")) for r in caplog.records),
                5,
                what="the model's error in the server log",
            )


def test_a_non_finite_output_is_a_model_failure_on_both_protocols(
    registry: Registry, redis_url: str, live: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    registry.save(strict_model, pickle_function=True)
    server = live(create_app(settings=_settings(registry, redis_url), refs=["strict"], registry=registry))
    good = {"amount": 1.0, "active": True, "count": 1}
    huge = good | {"amount": 1.7e308}  # a finite input; the model doubles it past float64
    tensors = {
        "inputs": [
            {"name": "amount", "shape": [1], "datatype": "FP64", "data": [1.7e308]},
            {"name": "active", "shape": [1], "datatype": "BOOL", "data": [True]},
            {"name": "count", "shape": [1], "datatype": "INT64", "data": [1]},
        ]
    }
    with httpx.Client(base_url=server.url, timeout=10) as http, caplog.at_level(logging.ERROR):
        answers = {
            "v1-one": http.post("/v1/models/strict/predict", json=huge, headers={"x-request-id": "inf-1"}),
            "v1-many": http.post(
                "/v1/models/strict/predict", json=[good, huge], headers={"x-request-id": "inf-2"}
            ),
            "v2": http.post("/v2/models/strict/infer", json=tensors, headers={"x-request-id": "inf-3"}),
        }
        for name, got in answers.items():
            assert got.status_code == 500, (name, got.text)
            assert "null" not in got.text
        assert answers["v1-one"].json()["request_id"] == "inf-1"
        wait_until(
            lambda: (
                {"inf-1", "inf-2", "inf-3"}
                <= {r.request_id for r in caplog.records if r.getMessage() == "prediction failed"}
            ),
            5,
            what="each failure logged as a failed prediction",
        )
        assert "'amount'" not in str(caplog.records[-1].__dict__)
        assert "inf for 'y' of row 0" in str(
            next(r for r in caplog.records if getattr(r, "request_id", None) == "inf-1").__dict__
        )

    async def together() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            return list(
                await asyncio.gather(
                    *(
                        client.post("/v1/models/strict/predict", json=huge if i == 3 else good)
                        for i in range(8)
                    )
                )
            )

    # concurrent requests run as one model call: the request with the bad output fails alone
    for _ in range(5):
        statuses = [r.status_code for r in asyncio.run(together())]
        assert statuses == [200] * 3 + [500] + [200] * 4


def test_error_bodies_cut_what_the_request_sent(
    registry: Registry, redis_url: str, live: Callable[..., Any]
) -> None:
    registry.save(strict_model, pickle_function=True)
    server = live(create_app(settings=_settings(registry, redis_url), refs=["strict"], registry=registry))
    name = "a" * 5000
    with httpx.Client(base_url=server.url, timeout=10) as http:
        missing = http.post(f"/v1/models/{name}/predict", json={"amount": 1.0})
        assert missing.status_code == 404
        assert len(missing.content) < 300
        assert "a" * 61 not in missing.text
        assert "served: strict" in missing.text
        ragged = {
            "inputs": [
                {"name": "amount", "shape": [1], "datatype": "FP64", "data": [1.0]},
                {"name": name, "shape": [2], "datatype": "FP64", "data": [1.0, 2.0]},
            ]
        }
        refused = http.post("/v2/models/strict/infer", json=ragged)
        assert refused.status_code == 400
        assert len(refused.content) < 300
        assert "every input needs the same number of rows" in refused.text


def test_validation_errors_cut_the_names_and_values_a_request_sent_and_echo_no_header(
    registry: Registry, redis_url: str, live: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    registry.save(closed_model, pickle_function=True)
    server = live(create_app(settings=_settings(registry, redis_url), refs=["closed"], registry=registry))
    hostile = 'k"\n\r\x1b[31m\x00\u2028' + "x" * 100_000
    amount = {"name": "amount", "shape": [1], "datatype": "FP64", "data": [1.0]}
    headers = {
        "content-type": "application/json; q=" + "c" * 3000,
        "x-request-id": "h" * 3000,
        "user-agent": "u" * 3000,
        "x-anything": "a" * 3000,
    }
    with httpx.Client(base_url=server.url, timeout=10) as http, caplog.at_level(logging.DEBUG):
        for path, body, where in [
            ("/v1/models/closed/predict", {"amount": 1.0, hostile: 1}, ["body"]),  # an extra field
            ("/v1/models/closed/predict", [{"amount": 1.0, "tags": {hostile: "1"}}], ["body", 0, "tags"]),
            ("/v1/models/closed/predict", {"amount": 1.0, "note": hostile}, ["body", "note"]),
            (
                "/v2/models/closed/infer",
                {"inputs": [amount, {"name": hostile, "shape": [1], "datatype": "FP64", "data": [1.0]}]},
                ["body", 0],
            ),
        ]:
            refused = http.post(path, content=orjson.dumps(body), headers=headers)
            assert refused.status_code == 422, refused.text
            assert len(refused.content) < 2000
            [problem] = orjson.loads(refused.content)["detail"]
            assert problem["loc"][: len(where)] == where
            if problem["loc"] != where:  # a name: cut, and on one line
                name = problem["loc"][-1]
                assert name.startswith('k"\\n\\r\\x1b[31m\\x00\\u2028xxx')
                assert name.endswith("x…")
            assert "x" * 301 not in problem["msg"]
            assert "\n" not in refused.text
            for header, value in headers.items():
                assert value[-100:] not in refused.text, header
        assert not [r for r in caplog.records if "x" * 301 in str(r.__dict__) or "h" * 200 in str(r.__dict__)]


def test_kserve_tensors_are_checked_as_the_open_inference_protocol_says(
    registry: Registry, redis_url: str, live: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    registry.save(strict_model, pickle_function=True)
    server = live(create_app(settings=_settings(registry, redis_url), refs=["strict"], registry=registry))
    amount = {"name": "amount", "shape": [2], "datatype": "FP64", "data": [1.0, 2]}
    active = {"name": "active", "shape": [2, 1], "datatype": "BOOL", "data": [[True], [False]]}
    count = {"name": "count", "shape": [2], "datatype": "INT32", "data": [1, 2]}

    def infer(*tensors: dict[str, Any], **body: Any) -> httpx.Response:
        return http.post("/v2/models/strict/infer", json={"inputs": list(tensors), **body})

    with httpx.Client(base_url=server.url, timeout=10) as http:
        ok = infer(amount, active, count)
        assert ok.status_code == 200, ok.text
        assert ok.json()["outputs"][0]["data"] == [3.0, 6.0]
        long = "x" * 5000
        for tensors, reason in [
            ([amount | {"shape": [5], "data": [1.0]}, active, count], "input 'amount' has shape [5]"),
            ([amount | {"shape": "x", "datatype": 5}, active, count], "input 'amount': 'shape' must be"),
            ([amount, active | {"data": [1, 0]}, count], "input 'active' is BOOL: its data must be booleans"),
            ([amount, active, count | {"data": [[1, 2], [3]]}], "input 'count' has shape [2] and nested"),
            ([amount, active, count, count | {"data": [3, 4]}], "input 'count' is given twice"),
            ([amount, active, count | {"datatype": "FP64"}], "input 'count' is FP64; the model's field"),
            ([amount, active, count | {"shape": [1], "data": [1]}], "every input needs the same number"),
            ([amount, active, count | {"datatype": "INT8", "data": [1, 999]}], "999 is out of its range"),
            ([amount | {"name": long}, active, count | {"data": [long, 1]}], "its data must be integers"),
        ]:
            refused = infer(*tensors)
            assert refused.status_code == 400, (reason, refused.text)
            assert list(refused.json()) == ["error"]
            assert reason in refused.json()["error"], refused.text
            assert len(refused.content) < 400
            assert "x" * 61 not in refused.text
        assert infer(amount, active, count, id=7).json() == {"error": "'id' must be a string, not 7"}
        assert http.post("/v2/models/strict/infer", json=[amount]).status_code == 400
        # the request's id comes back as given; logs and the header take it only when it is a plain token
        assert infer(amount, active, count, id="plain-1").json()["id"] == "plain-1"
        with caplog.at_level(logging.DEBUG):
            spaced = infer(amount, active, count, id="my request #7")
            assert spaced.status_code == 200
            assert spaced.json()["id"] == "my request #7"
            assert spaced.headers["x-request-id"] != "my request #7"
        assert not [r for r in caplog.records if "my request #7" in str(r.__dict__)]


def test_a_client_that_hangs_up_mid_body_is_one_quiet_log_line(
    registry: Registry, redis_url: str, live: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    registry.save(strict_model, pickle_function=True)
    server = live(create_app(settings=_settings(registry, redis_url), refs=["strict"], registry=registry))
    uvicorn_log = logging.getLogger("uvicorn")  # uvicorn's own loggers do not propagate to the root
    uvicorn_log.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.DEBUG):
            for path in ("/v1/models/strict/predict", "/v2/models/strict/infer"):
                with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
                    conn.sendall(
                        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        "Content-Length: 100\r\n\r\n".encode()
                        + b'{"amount": 1'
                    )
                    time.sleep(0.2)  # the app is reading the body when the client goes away
            wait_until(
                lambda: sum("went away" in r.getMessage() for r in caplog.records) == 2,
                5,
                what="one line per client that went away",
            )
            time.sleep(0.3)  # anything else the server would log about them
            with httpx.Client(base_url=server.url, timeout=10) as http:
                ok = http.post("/v1/models/strict/predict", json={"amount": 1.0, "active": True, "count": 1})
                assert ok.status_code == 200
    finally:
        uvicorn_log.removeHandler(caplog.handler)
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert noisy == [], [r.getMessage() for r in noisy]
    quiet = [r for r in caplog.records if "went away" in r.getMessage()]
    assert [r.levelno for r in quiet] == [logging.INFO, logging.INFO]
