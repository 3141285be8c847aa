from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
import redis
from prometheus_client import CollectorRegistry

from thimble.modelops import Registry, Tracker
from thimble.modelops.config import load_modelops_settings
from thimble.modelops.server import create_app
from thimble.testing import TopicReader, free_port, wait_until

pytestmark = pytest.mark.integration


def _settings(registry: Registry, redis_url: str, prefix: str, **server: Any) -> Any:
    return load_modelops_settings(
        overrides={
            "online_store": {"url": redis_url, "key_prefix": prefix},
            "modelops": {"registry": registry.url, "server": server},
        }
    )


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def store(redis_url: str, prefix: str) -> Any:
    client = redis.Redis.from_url(redis_url)
    yield client
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def _put_features(store: Any, prefix: str, client_id: int, **values: Any) -> None:
    mapping = {k: orjson.dumps(v) for k, v in values.items()} | {"_event_time": 1_700_000_000_000}
    store.hset(f"{prefix}:client-features:{client_id}", mapping=mapping)


def test_predicts_one_row_or_many_through_uvicorn(
    saved_churn: Registry, redis_url: str, prefix: str, live: Callable[..., Any]
) -> None:
    app = create_app(
        settings=_settings(saved_churn, redis_url, prefix), refs=["churn@prod"], registry=saved_churn
    )
    server = live(app)
    expected = saved_churn.load("churn@1").predict([{"client_id": 1, "orders_7d": 2, "spend_7d": 30.0}])
    with httpx.Client(base_url=server.url) as http:
        one = http.post(
            "/v1/models/churn@prod/predict", json={"client_id": 1, "orders_7d": 2, "spend_7d": 30.0}
        )
        assert one.status_code == 200
        body = one.json()
        assert body["model"] == "churn"
        assert body["version"] == 1
        assert body["predictions"] == expected
        assert one.headers["x-request-id"] == body["request_id"]
        many = http.post(
            "/v1/models/churn@1/predict",
            json=[
                {"client_id": 1, "orders_7d": 2, "spend_7d": 30.0},
                {"client_id": 2, "orders_7d": 19, "spend_7d": 80.0},
            ],
            headers={"x-request-id": "abc"},
        )
        assert many.json()["request_id"] == "abc"
        assert len(many.json()["predictions"]) == 2
        assert many.json()["predictions"][0] == expected[0]
        assert (
            http.post(
                "/v1/models/churn/predict", json={"client_id": 1, "orders_7d": 2, "spend_7d": 30.0}
            ).status_code
            == 200
        )
        assert http.get("/healthz").text == "ok\n"
        assert http.get("/readyz").status_code == 200
        assert set(http.get("/v1/models").json()) == {"churn", "churn@1", "churn@prod"}


def test_errors_are_field_level_and_clear(
    saved_churn: Registry, redis_url: str, prefix: str, live: Callable[..., Any]
) -> None:
    server = live(
        create_app(
            settings=_settings(saved_churn, redis_url, prefix), refs=["churn@prod"], registry=saved_churn
        )
    )
    with httpx.Client(base_url=server.url) as http:
        bad = http.post(
            "/v1/models/churn@prod/predict",
            json=[
                {"client_id": 1, "orders_7d": 1, "spend_7d": 1.0},
                {"client_id": -5, "orders_7d": "many", "spend_7d": 1.0},
            ],
        )
        assert bad.status_code == 422
        locs = {tuple(d["loc"]) for d in bad.json()["detail"]}
        assert locs == {("body", 1, "client_id"), ("body", 1, "orders_7d")}
        single = http.post(
            "/v1/models/churn@prod/predict", json={"client_id": 1, "orders_7d": 1, "spend_7d": "x"}
        )
        assert [d["loc"] for d in single.json()["detail"]] == [["body", "spend_7d"]]
        assert http.post("/v1/models/churn@prod/predict", content=b"{nope").status_code == 400
        assert http.post("/v1/models/churn@prod/predict", json=[]).status_code == 422
        assert http.post("/v1/models/churn@prod/predict", json=7).status_code == 422
        unknown = http.post("/v1/models/churn@canary/predict", json={"client_id": 1})
        assert unknown.status_code == 404
        assert "served: churn, churn@1, churn@prod" in unknown.json()["detail"]


def test_features_come_from_the_online_store(
    saved_churn: Registry, redis_url: str, prefix: str, store: Any, live: Callable[..., Any]
) -> None:
    _put_features(store, prefix, 42, orders_7d=3, spend_7d=12.5)
    _put_features(store, prefix, 43, spend_7d=99.0)
    server = live(
        create_app(
            settings=_settings(saved_churn, redis_url, prefix), refs=["churn@prod"], registry=saved_churn
        )
    )
    model = saved_churn.load("churn@1")
    with httpx.Client(base_url=server.url) as http:
        filled = http.post(
            "/v1/models/churn@prod/predict",
            json=[{"client_id": 42}, {"client_id": 43}, {"client_id": 42, "spend_7d": 70.0}],
        )
        assert filled.status_code == 200, filled.text
        assert filled.json()["predictions"] == model.predict(
            [
                {"client_id": 42, "orders_7d": 3, "spend_7d": 12.5},
                {"client_id": 43, "orders_7d": 0, "spend_7d": 99.0},
                {"client_id": 42, "orders_7d": 3, "spend_7d": 70.0},
            ]
        )
        missing = http.post("/v1/models/churn@prod/predict", json={"client_id": 404})
        assert missing.status_code == 422
        assert missing.json()["detail"] == [
            {
                "loc": ["body", "spend_7d"],
                "msg": "feature 'spend_7d' of client_id=404 is not in the online store and has no default; "
                "send it in the request or declare a default",
                "type": "missing_feature",
            }
        ]
        metrics = http.get("/metrics").text
    assert (
        'thimble_modelops_missing_features_total{feature="orders_7d",model="churn",outcome="defaulted",version="1"} 1.0'
        in metrics
    )
    assert (
        'thimble_modelops_missing_features_total{feature="spend_7d",model="churn",outcome="rejected",version="1"} 1.0'
        in metrics
    )


def test_an_entity_key_reads_the_entity_its_field_validates(
    saved_churn: Registry, redis_url: str, prefix: str, store: Any, live: Callable[..., Any]
) -> None:
    _put_features(store, prefix, 42, orders_7d=3, spend_7d=12.5)
    for hostile in ("True", "{'x': 1}", "[42]", "42.5"):
        _put_features(store, prefix, hostile, orders_7d=9, spend_7d=-9.0)  # type: ignore[arg-type]
    server = live(
        create_app(
            settings=_settings(saved_churn, redis_url, prefix), refs=["churn@prod"], registry=saved_churn
        )
    )
    expected = saved_churn.load("churn@1").predict([{"client_id": 42, "orders_7d": 3, "spend_7d": 12.5}])
    with httpx.Client(base_url=server.url) as http:
        same = http.post("/v1/models/churn@prod/predict", json=[{"client_id": 42.0}, {"client_id": 42}])
        assert same.status_code == 200, same.text
        assert same.json()["predictions"] == expected * 2
        for value in (True, {"x": 1}, [42], 42.5, "42"):
            refused = http.post("/v1/models/churn@prod/predict", json={"client_id": value})
            assert refused.status_code == 422, (value, refused.text)
            detail = refused.json()["detail"]
            assert ["body", "client_id"] in [d["loc"] for d in detail], (value, detail)
            assert all(d["type"] != "missing_feature" for d in detail), (value, detail)


def test_concurrent_feature_lookups_each_get_their_own_entity(
    saved_churn: Registry, redis_url: str, prefix: str, store: Any, live: Callable[..., Any]
) -> None:
    for i in range(40):
        _put_features(store, prefix, i, orders_7d=i % 7, spend_7d=10.0 + i)
    server = live(
        create_app(
            settings=_settings(saved_churn, redis_url, prefix), refs=["churn@prod"], registry=saved_churn
        )
    )
    again = list(range(0, 40, 3))  # asked twice, often in the same round trip: read once, answered twice
    ids = [*range(40), *again, 404, 405]  # the last two are not in the store

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, limits=httpx.Limits(max_connections=64)) as http:
            return await asyncio.gather(
                *(http.post("/v1/models/churn@prod/predict", json={"client_id": i}) for i in ids)
            )

    responses = asyncio.run(fire())
    model = saved_churn.load("churn@1")
    expected = model.predict([{"client_id": i, "orders_7d": i % 7, "spend_7d": 10.0 + i} for i in range(40)])
    assert [r.json()["predictions"][0] for r in responses[:40]] == expected
    assert [r.json()["predictions"][0] for r in responses[40:-2]] == [expected[i] for i in again]
    assert [r.status_code for r in responses[-2:]] == [422, 422]
    assert responses[-1].json()["detail"][0]["msg"].startswith("feature 'spend_7d' of client_id=405")


def test_an_unreachable_online_store_is_a_clear_503(
    saved_churn: Registry, prefix: str, live: Callable[..., Any]
) -> None:
    app = create_app(
        settings=_settings(saved_churn, f"redis://127.0.0.1:{free_port()}/0", prefix),
        refs=["churn@prod"],
        registry=saved_churn,
    )
    server = live(app)
    with httpx.Client(base_url=server.url) as http:
        down = http.post("/v1/models/churn@prod/predict", json={"client_id": 1})
        assert down.status_code == 503
        assert "online store unavailable for feature set 'client-features'" in down.json()["detail"][0]["msg"]
        sent = http.post(
            "/v1/models/churn@prod/predict", json={"client_id": 1, "orders_7d": 1, "spend_7d": 2.0}
        )
        assert sent.status_code == 200  # a request carrying every feature needs no store
        assert http.get("/readyz").status_code == 503


def test_concurrent_requests_are_micro_batched(
    saved_churn: Registry, redis_url: str, prefix: str, live: Callable[..., Any]
) -> None:
    app = create_app(
        settings=_settings(saved_churn, redis_url, prefix, max_wait_ms=20, max_batch_size=32),
        refs=["churn@prod"],
        registry=saved_churn,
    )
    server = live(app)
    served = app.state.served["churn@prod"]

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, limits=httpx.Limits(max_connections=64)) as http:
            return await asyncio.gather(
                *(
                    http.post(
                        "/v1/models/churn@prod/predict",
                        json={"client_id": i, "orders_7d": i % 20, "spend_7d": float(i)},
                    )
                    for i in range(64)
                )
            )

    responses = asyncio.run(fire())
    assert all(r.status_code == 200 for r in responses)
    calls = list(served.model.context.params["calls"])
    expected = served.model.predict(
        [{"client_id": i, "orders_7d": i % 20, "spend_7d": float(i)} for i in range(64)]
    )
    assert [r.json()["predictions"][0] for r in responses] == expected
    assert sum(calls) == 64
    assert len(calls) < 64
    assert max(calls) <= 32


def test_bearer_token_is_required_when_configured(
    saved_churn: Registry, redis_url: str, prefix: str, live: Callable[..., Any]
) -> None:
    server = live(
        create_app(
            settings=_settings(saved_churn, redis_url, prefix, auth_token="s3cret-token-0123456"),
            refs=["churn"],
            registry=saved_churn,
        )
    )
    row = {"client_id": 1, "orders_7d": 1, "spend_7d": 1.0}
    with httpx.Client(base_url=server.url) as http:
        assert http.post("/v1/models/churn/predict", json=row).status_code == 401
        assert (
            http.post(
                "/v1/models/churn/predict", json=row, headers={"Authorization": "Bearer wrong"}
            ).status_code
            == 401
        )
        assert (
            http.post(
                "/v1/models/churn/predict", json=row, headers={"Authorization": "Bearer s3cret-token-0123456"}
            ).status_code
            == 200
        )
        assert http.get("/healthz").status_code == 200
        # every protected route keeps its auth: the routers' routes are served from the app's own table
        infer = {"inputs": [{"name": "client_id", "shape": [1], "datatype": "INT64", "data": [1]}]}
        for method, path, body in [
            ("GET", "/v1/models", None),
            ("POST", "/v1/models/churn@1/predict", row),
            ("GET", "/v2/models/churn", None),
            ("GET", "/v2/models/churn/ready", None),
            ("POST", "/v2/models/churn/infer", infer),
        ]:
            assert http.request(method, path, json=body).status_code == 401, path
        assert http.get("/v2/health/live").status_code == 200
        assert http.get("/v2/health/ready").status_code == 200


def test_fastapi_open_telemetry_traces_requests_only_when_the_setting_turns_it_on(
    saved_churn: Registry, redis_url: str, prefix: str, live: Callable[..., Any]
) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # the process's provider: set once, shut down when the test ends
    row = {"client_id": 1, "orders_7d": 1, "spend_7d": 1.0}
    try:
        for turned_on in (False, True):
            settings = _settings(saved_churn, redis_url, prefix, open_telemetry=turned_on)
            server = live(create_app(settings=settings, refs=["churn"], registry=saved_churn))
            with httpx.Client(base_url=server.url) as http:
                assert http.post("/v1/models/churn/predict", json=row).status_code == 200
            names = [span.name for span in exporter.get_finished_spans()]
            if turned_on:
                assert "POST /v1/models/churn/predict" in names, names
            else:
                assert names == []
            exporter.clear()
    finally:
        provider.shutdown()


def test_kserve_v2_inference(
    saved_churn: Registry, redis_url: str, prefix: str, live: Callable[..., Any]
) -> None:
    server = live(
        create_app(settings=_settings(saved_churn, redis_url, prefix), refs=["churn"], registry=saved_churn)
    )
    model = saved_churn.load("churn@1")
    with httpx.Client(base_url=server.url) as http:
        meta = http.get("/v2/models/churn").json()
        assert meta["versions"] == ["1"]
        assert {"name": "spend_7d", "datatype": "FP64", "shape": [-1]} in meta["inputs"]
        out = http.post(
            "/v2/models/churn/infer",
            json={
                "id": "r1",
                "inputs": [
                    {"name": "client_id", "shape": [2], "datatype": "INT64", "data": [1, 2]},
                    {"name": "orders_7d", "shape": [2], "datatype": "INT64", "data": [1, 15]},
                    {"name": "spend_7d", "shape": [2], "datatype": "FP64", "data": [10.0, 90.0]},
                ],
            },
        ).json()
        assert out["id"] == "r1"
        expected = model.predict(
            [
                {"client_id": 1, "orders_7d": 1, "spend_7d": 10.0},
                {"client_id": 2, "orders_7d": 15, "spend_7d": 90.0},
            ]
        )
        assert out["outputs"][0] == {
            "name": "p_churn",
            "datatype": "FP64",
            "shape": [2],
            "data": [e["p_churn"] for e in expected],
        }
        assert out["outputs"][1]["datatype"] == "BOOL"
        assert http.post("/v2/models/churn/infer", json={"inputs": []}).status_code == 400


def test_kserve_v2_answers_the_outputs_a_request_asks_for_in_its_order(
    saved_churn: Registry, redis_url: str, prefix: str, live: Callable[..., Any]
) -> None:
    server = live(
        create_app(settings=_settings(saved_churn, redis_url, prefix), refs=["churn"], registry=saved_churn)
    )
    inputs = [
        {"name": "client_id", "shape": [2], "datatype": "INT64", "data": [1, 2]},
        {"name": "orders_7d", "shape": [2], "datatype": "INT64", "data": [1, 15]},
        {"name": "spend_7d", "shape": [2], "datatype": "FP64", "data": [10.0, 90.0]},
    ]
    expected = saved_churn.load("churn@1").predict(
        [
            {"client_id": 1, "orders_7d": 1, "spend_7d": 10.0},
            {"client_id": 2, "orders_7d": 15, "spend_7d": 90.0},
        ]
    )

    def infer(outputs: Any) -> httpx.Response:
        return http.post("/v2/models/churn/infer", json={"inputs": inputs, "outputs": outputs})

    with httpx.Client(base_url=server.url) as http:
        asked = infer([{"name": "high_risk"}, {"name": "p_churn", "parameters": {"binary_data": False}}])
        assert asked.status_code == 200, asked.text
        assert [(o["name"], o["data"]) for o in asked.json()["outputs"]] == [
            ("high_risk", [e["high_risk"] for e in expected]),
            ("p_churn", [e["p_churn"] for e in expected]),
        ]
        only = infer([{"name": "high_risk"}]).json()["outputs"]
        assert [o["name"] for o in only] == ["high_risk"]
        assert [o["name"] for o in infer([]).json()["outputs"]] == ["p_churn", "high_risk"]
        long = "x" * 5000 + "\n"
        for outputs, reason in [
            (
                [{"name": "p_churn"}, {"name": "nope"}],
                "output 'nope' is not an output of this model; its outputs: p_churn, high_risk",
            ),
            ([{"name": long}], "output 'xxx"),
            ([{"name": "p_churn"}, {"name": "p_churn"}], "output 'p_churn' is asked twice"),
            ([{"name": 1}], "output 0 needs a string 'name'"),
            ([{"name": "p_churn", "parameters": 5}], "'parameters' must be an object"),
            ({"name": "p_churn"}, "'outputs' must be a list"),
            (None, "'outputs' must be a list"),
        ]:
            refused = infer(outputs)
            assert refused.status_code == 400, (outputs, refused.text)
            assert list(refused.json()) == ["error"]
            assert reason in refused.json()["error"]
            assert len(refused.content) < 400
            assert "x" * 61 not in refused.text
        schema = http.get("/openapi.json").json()["paths"]["/v2/models/{name}/infer"]["post"]["requestBody"]
        assert "outputs" in schema["content"]["application/json"]["schema"]["properties"]


def test_metrics_tracking_and_prediction_log(
    saved_churn: Registry,
    redis_url: str,
    prefix: str,
    live: Callable[..., Any],
    kafka_topic: Callable[..., str],
    reader: Callable[[str], TopicReader],
) -> None:
    topic = kafka_topic("predictions")
    app = create_app(
        settings=_settings(saved_churn, redis_url, prefix, prediction_log_topic=topic),
        refs=["churn@prod"],
        registry=saved_churn,
    )
    server = live(app)
    rows = [{"client_id": i, "orders_7d": i % 20, "spend_7d": 40.0 + i} for i in range(20)]
    with httpx.Client(base_url=server.url) as http:
        ids = [http.post("/v1/models/churn@prod/predict", json=r).json()["request_id"] for r in rows]
        metrics = http.get("/metrics").text
    assert 'thimble_modelops_predictions_total{model="churn",version="1"} 20.0' in metrics
    assert 'thimble_modelops_request_latency_seconds_count{model="churn",version="1"} 20.0' in metrics
    assert (
        'thimble_modelops_prediction_value_count{field="p_churn",model="churn",version="1"} 20.0' in metrics
    )

    predictions = reader(topic)
    predictions.wait_until(
        lambda: len({v["request_id"] for v in predictions.values()}) == 20,
        30,
        what="20 prediction records on Kafka",
    )
    got = {v["request_id"]: v for v in predictions.values()}
    first = got[ids[0]]
    assert first["model"] == "churn"
    assert first["version"] == 1
    assert first["inputs"] == [rows[0]]
    assert first["outputs"] == saved_churn.load("churn@1").predict([rows[0]])
    assert first["latency_ms"] > 0

    asyncio.run(app.state.flush_stats())
    serve = Tracker(f"{saved_churn.root}/_tracking.sqlite").records("churn", 1, "serve")
    assert len(serve) == 1
    assert serve[0].metrics["requests"] == 20
    assert serve[0].metrics["latency.p99_ms"] >= serve[0].metrics["latency.p50_ms"] > 0
    assert "psi.input.spend_7d" in serve[0].metrics
    assert "psi.output.p_churn" in serve[0].metrics
    assert "output.p_churn" in serve[0].distributions


def test_request_metrics_reach_prometheus_within_a_second_without_a_scrape(
    saved_churn: Registry, redis_url: str, prefix: str, live: Callable[..., Any]
) -> None:
    registry = CollectorRegistry()
    app = create_app(
        settings=_settings(saved_churn, redis_url, prefix),
        refs=["churn@prod"],
        registry=saved_churn,
        metrics_registry=registry,
    )
    server = live(app)
    labels = {"model": "churn", "version": "1"}
    with httpx.Client(base_url=server.url) as http:
        for i in range(7):
            row = {"client_id": i, "orders_7d": i, "spend_7d": 10.0 + i}
            assert http.post("/v1/models/churn@prod/predict", json=row).status_code == 200
        # The other worker of a --workers server writes its requests' metrics on its own, once a second.
        wait_until(
            lambda: registry.get_sample_value("thimble_modelops_predictions_total", labels) == 7,
            timeout=5,
            what="the predictions counted without a scrape",
        )
        assert registry.get_sample_value("thimble_modelops_request_latency_seconds_count", labels) == 7
        assert http.get("/metrics").status_code == 200
    assert registry.get_sample_value("thimble_modelops_predictions_total", labels) == 7


def test_prediction_log_never_blocks_when_kafka_is_unreachable(
    saved_churn: Registry,
    redis_url: str,
    prefix: str,
    live: Callable[..., Any],
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("THIMBLE_RUN_DIR", str(tmp_path))
    settings = load_modelops_settings(
        overrides={
            "online_store": {"url": redis_url, "key_prefix": prefix},
            "kafka": {"bootstrap_servers": "127.0.0.1:1"},
            "modelops": {
                "registry": saved_churn.url,
                "server": {
                    "prediction_log_topic": "nowhere",
                    "prediction_log_queue": 5,
                    "prediction_log_flush_s": 0.2,
                },
            },
        }
    )
    app = create_app(settings=settings, refs=["churn"], registry=saved_churn)
    server = live(app)
    with httpx.Client(base_url=server.url, timeout=5) as http:
        for i in range(30):
            assert (
                http.post(
                    "/v1/models/churn/predict", json={"client_id": i, "spend_7d": 1.0, "orders_7d": 1}
                ).status_code
                == 200
            )
    assert app.state.prediction_log.sent + app.state.prediction_log.dropped <= 30
