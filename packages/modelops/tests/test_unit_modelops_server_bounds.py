"""The server's answers and log lines stay bounded whatever a request or a model makes of them: the
real app, in process (no network, no other service)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict

from thimble.modelops import ModelContext, Registry, model
from thimble.modelops.config import load_modelops_settings
from thimble.modelops.server import create_app

pytestmark = pytest.mark.unit


class In(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: float
    mode: int = 0


class Out(BaseModel):
    y: float


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text")


@model(name="bounds")
def bounds_model(ctx: ModelContext, rows: list[In]) -> list[Out]:
    """mode 1 raises with a long, multi-line message; mode 2 raises an error that cannot be printed."""
    if any(r.mode == 1 for r in rows):
        raise ValueError("first line\n" + "x" * 50_000 + "TAIL")
    if any(r.mode == 2 for r in rows):
        raise Unprintable
    return [Out(y=r.amount) for r in rows]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    registry = Registry(str(tmp_path / "models"))
    registry.save(bounds_model, pickle_function=True)
    settings = load_modelops_settings(
        overrides={"modelops": {"registry": registry.url, "server": {"max_rows": 5000}}}
    )
    with TestClient(create_app(settings=settings, refs=["bounds"], registry=registry)) as http:
        yield http


def test_a_models_error_is_logged_cut_with_the_cut_said(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        for mode, rid in [(1, "long-1"), (2, "unprintable-2")]:
            got = client.post(
                "/v1/models/bounds/predict", json={"amount": 1.0, "mode": mode}, headers={"x-request-id": rid}
            )
            assert got.status_code == 500, got.text
            assert got.json()["request_id"] == rid
    errors = {r.request_id: str(r.error) for r in caplog.records if r.getMessage() == "prediction failed"}
    long = errors["long-1"]
    assert len(long) < 4200
    assert long.startswith("model bounds@1 raised ValueError: first line\\nxxx")
    assert long.endswith("… (46015 more characters)")
    assert "TAIL" not in long
    assert "\n" not in long
    assert errors["unprintable-2"] == (
        "model bounds@1 raised Unprintable: (its text cannot be shown: str() raised RuntimeError)"
    )


def test_a_422_lists_the_first_100_problems_and_says_how_many_there_were(client: TestClient) -> None:
    bad = [{"amount": "1", "extra": i} for i in range(3000)]  # two problems a row, over 3 chunks
    got = client.post("/v1/models/bounds/predict", content=orjson.dumps(bad))
    assert got.status_code == 422
    assert len(got.content) < 20_000
    detail = got.json()["detail"]
    assert len(detail) == 101
    assert detail[0]["loc"] == ["body", 0, "amount"]
    assert detail[-1] == {
        "loc": ["body"],
        "msg": "6000 problems in all; the first 100 are listed",
        "type": "too_many_problems",
        "ctx": {"total": 6000, "listed": 100},
    }
    tensors = {"inputs": [{"name": "amount", "shape": [3000], "datatype": "BYTES", "data": ["1"] * 3000}]}
    refused = client.post("/v2/models/bounds/infer", json=tensors)
    assert refused.status_code == 400  # BYTES does not suit a float field
    few = client.post("/v1/models/bounds/predict", json=[{"amount": "1"}, {"amount": 2.0, "mode": "x"}])
    assert [d["loc"] for d in few.json()["detail"]] == [["body", 0, "amount"], ["body", 1, "mode"]]


@pytest.mark.parametrize("depth", [254, 1000], ids=["past-the-encoder-limit", "past-the-recursion-limit"])
def test_a_row_nested_too_deep_is_a_422_naming_it(client: TestClient, depth: int) -> None:
    deep = b'{"amount": 1, "x": ' + b"[" * depth + b"]" * depth + b"}"
    one = client.post("/v1/models/bounds/predict", content=deep)
    assert one.status_code == 422, one.text
    problem = {"msg": "nested more than 253 levels deep; a row may not nest deeper", "type": "json_too_deep"}
    assert one.json() == {"detail": [{"loc": ["body"], **problem}]}
    many = client.post("/v1/models/bounds/predict", content=b'[{"amount": 1}, ' + deep + b"]")
    assert many.json() == {"detail": [{"loc": ["body", 1], **problem}]}


class Keyed(BaseModel):
    client_id: int
    amount: float


@model(name="keyed")
def keyed_model(ctx: ModelContext, rows: list[Keyed]) -> list[Out]:
    return [Out(y=r.amount) for r in rows]


def test_a_canary_split_takes_an_entity_nested_as_deep_as_json_goes_to_validation(tmp_path: Path) -> None:
    registry = Registry(str(tmp_path / "models"))
    registry.save(keyed_model, pickle_function=True, aliases=["prod"])
    registry.save(keyed_model, pickle_function=True, aliases=["canary"])
    rollout = {"keyed@prod": {"canary": "canary", "canary_share": 0.5, "entity_key": "client_id"}}
    settings = load_modelops_settings(
        overrides={"modelops": {"registry": registry.url, "server": {"rollout": rollout}}}
    )
    with TestClient(create_app(settings=settings, refs=["keyed@prod"], registry=registry)) as http:
        deep = b'{"amount": 1, "client_id": ' + b"[" * 1020 + b"]" * 1020 + b"}"
        refused = http.post("/v1/models/keyed@prod/predict", content=deep)
        assert refused.status_code == 422
        assert refused.json()["detail"][0]["type"] == "json_too_deep"
        split = http.post(
            "/v1/models/keyed@prod/predict", json=[{"amount": 1, "client_id": i} for i in range(6)]
        )
        assert set(split.json()["versions"]) == {1, 2}  # plain entities still split
