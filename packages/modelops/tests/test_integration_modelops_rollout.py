"""Live rollout against a running server: alias moves, a canary share, a shadow, and their comparison."""

from __future__ import annotations

import gc
import hashlib
import subprocess
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from modelops_testmodels import churn
from pydantic import BaseModel, Field
from sklearn.linear_model import LogisticRegression

from thimble.modelops import ModelContext, Registry, model
from thimble.modelops.config import load_modelops_settings
from thimble.modelops.server import create_app
from thimble.testing import TopicReader, wait_until

pytestmark = pytest.mark.integration


class SlowIn(BaseModel):
    wait_ms: int = Field(ge=0, le=10_000)
    mark: str


class SlowOut(BaseModel):
    done: bool


@model(name="slow")
def slow(ctx: ModelContext, rows: list[SlowIn]) -> list[SlowOut]:
    """Touches ``mark`` when it starts, then takes ``wait_ms``."""
    for r in rows:
        Path(r.mark).touch()
        time.sleep(r.wait_ms / 1000)
    return [SlowOut(done=True) for _ in rows]


def _settings(registry: Registry, redis_url: str, kafka: dict[str, Any] | None = None, **server: Any) -> Any:
    return load_modelops_settings(
        overrides={
            "online_store": {"url": redis_url, "key_prefix": f"test-{uuid.uuid4().hex[:8]}"},
            "modelops": {"registry": registry.url, "server": server},
            **({"kafka": kafka} if kafka else {}),
        }
    )


def test_the_server_follows_an_alias_move_finishes_requests_on_the_old_version_then_frees_it(
    registry: Registry, redis_url: str, live: Callable[..., Any], tmp_path: Path
) -> None:
    registry.save(slow, aliases=["prod"], pickle_function=True)
    registry.save(slow, pickle_function=True)
    app = create_app(
        settings=_settings(registry, redis_url, alias_poll_s=0.1, run_in_thread=True),
        refs=["slow@prod"],
        registry=registry,
    )
    first = weakref.ref(app.state.serving.routes["slow@prod"].model)
    server = live(app)
    mark = tmp_path / "started"
    result: dict[str, Any] = {}

    def in_flight() -> None:
        got = httpx.post(
            f"{server.url}/v1/models/slow@prod/predict", json={"wait_ms": 1500, "mark": str(mark)}, timeout=30
        )
        result.update(status=got.status_code, version=got.json()["version"])

    sender = threading.Thread(target=in_flight)
    sender.start()
    wait_until(mark.exists, 20, what="the slow request to reach the model")
    registry.set_alias("slow", "prod", 2)
    quick = {"wait_ms": 0, "mark": str(tmp_path / "quick")}
    with httpx.Client(base_url=server.url, timeout=30) as http:
        wait_until(
            lambda: http.post("/v1/models/slow@prod/predict", json=quick).json()["version"] == 2,
            20,
            what="slow@prod to answer with version 2",
        )
        assert http.post("/v1/models/slow/predict", json=quick).json()["version"] == 2
    sender.join(30)
    assert result == {"status": 200, "version": 1}

    def version_1_freed() -> bool:
        gc.collect()
        return first() is None

    wait_until(version_1_freed, 20, what="version 1 to leave memory once its last request is done")
    assert sorted(app.state.serving.routes) == ["slow", "slow@2", "slow@prod"]
    document = httpx.get(f"{server.url}/openapi.json", timeout=30).json()  # what /docs shows
    operation = document["paths"]["/v1/models/slow@prod/predict"]["post"]
    assert operation["summary"] == "Predict with slow@prod (version 2)"
    assert operation["requestBody"]["content"]["application/json"]["schema"]["oneOf"][0] == {
        "$ref": "#/components/schemas/slow_2_input"
    }


class EchoIn(BaseModel):
    x: float


class EchoOut(BaseModel):
    y: float


@model(name="echo")
def echo(ctx: ModelContext, rows: list[EchoIn]) -> list[EchoOut]:
    return [EchoOut(y=r.x) for r in rows]


def test_an_alias_at_a_broken_version_stops_following_of_that_reference_only(
    registry: Registry, redis_url: str, live: Callable[..., Any], tmp_path: Path
) -> None:
    registry.save(slow, aliases=["staging"], pickle_function=True)
    registry.save(slow, pickle_function=True)
    registry.save(echo, pickle_function=True)
    app = create_app(
        settings=_settings(registry, redis_url, alias_poll_s=0.1),
        refs=["slow@staging", "echo"],  # the broken one is re-read first
        registry=registry,
    )
    server = live(app)
    envelope = Path(registry.root) / "slow/versions/2/envelope.json"
    envelope.write_bytes(envelope.read_bytes()[:100])  # truncated: version 2 can no longer be loaded
    registry.set_alias("slow", "staging", 2)
    registry.save(echo, pickle_function=True)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        wait_until(
            lambda: http.post("/v1/models/echo/predict", json={"x": 1.0}).json()["version"] == 2,
            20,
            what="echo to follow its new version while slow@staging is broken",
        )
        still = http.post("/v1/models/slow@staging/predict", json={"wait_ms": 0, "mark": str(tmp_path / "m")})
        assert (still.status_code, still.json()["version"]) == (200, 1)
    registry.set_alias("slow", "staging", 1)
    registry.save(slow, pickle_function=True)
    registry.set_alias("slow", "staging", 3)  # mended: slow@staging follows again
    with httpx.Client(base_url=server.url, timeout=30) as http:
        quick = {"wait_ms": 0, "mark": str(tmp_path / "q")}
        wait_until(
            lambda: http.post("/v1/models/slow@staging/predict", json=quick).json()["version"] == 3,
            20,
            what="slow@staging to follow again once its alias is mended",
        )


def _bucket(experiment: str, entity: object) -> float:
    digest = hashlib.sha256(f"{experiment}:{entity}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def test_a_canary_takes_a_sticky_share_and_a_shadow_scores_everything(
    registry: Registry,
    churn_clf: LogisticRegression,
    redis_url: str,
    live: Callable[..., Any],
    kafka_config: dict[str, Any],
    kafka_topic: Callable[..., str],
    reader: Callable[[str], TopicReader],
    tmp_path: Path,
) -> None:
    for aliases in (["prod"], ["canary"], ["shadow"]):
        registry.save(churn, artifacts={"clf": churn_clf}, aliases=aliases, pickle_function=True)
    topic = kafka_topic("rollout")
    settings = _settings(
        registry,
        redis_url,
        prediction_log_topic=topic,
        rollout={"churn@prod": {"canary": "canary", "canary_share": 0.3, "shadow": "shadow"}},
    )
    server = live(create_app(settings=settings, refs=["churn@prod"], registry=registry))
    answered: dict[str, int] = {}
    answered_by: dict[int, int] = {}
    single_predictions: dict[int, Any] = {}
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for i in range(60):
            row = {"client_id": i, "orders_7d": i % 20, "spend_7d": float(i)}
            got = http.post("/v1/models/churn@prod/predict", json=row).json()
            assert got["version"] == (2 if _bucket("churn@canary", i) < 0.3 else 1), i
            assert "versions" not in got
            answered[got["request_id"]] = answered_by[i] = got["version"]
            single_predictions[i] = got["predictions"][0]
        again = http.post("/v1/models/churn@prod/predict", json={"client_id": 7, "spend_7d": 1.0}).json()
        assert again["version"] == (2 if _bucket("churn@canary", 7) < 0.3 else 1)
        # the sticky key is each row's entity: one request's rows go to both sides, each as when alone
        rows = [{"client_id": i, "orders_7d": i % 20, "spend_7d": float(i)} for i in range(60)]
        mixed = http.post("/v1/models/churn@prod/predict", json=rows).json()
        assert mixed["versions"] == [answered_by[i] for i in range(60)]
        assert [p["p_churn"] for p in mixed["predictions"]] == pytest.approx(
            [single_predictions[i]["p_churn"] for i in range(60)], rel=1e-9
        )
        assert (mixed["model"], mixed["version"]) == ("churn", 1)
    assert 5 < sum(v == 2 for v in answered.values()) < 35

    predictions = reader(topic)
    predictions.wait_for(2 * 61 + 3, 60)
    records = predictions.values()
    by_role = {(r["request_id"], r["role"]): r for r in records}
    for rid, version in answered.items():
        answer = by_role[(rid, "canary" if version == 2 else "primary")]
        assert (answer["alias"], answer["version"]) == (
            ("churn@canary", 2) if version == 2 else ("churn@prod", 1)
        )
        shadow = by_role[(rid, "shadow")]
        assert (shadow["alias"], shadow["version"]) == ("churn@shadow", 3)
        assert shadow["outputs"] == answer["outputs"]  # the same model and artifacts in every version
    for role, version in (("primary", 1), ("canary", 2)):
        part = by_role[(mixed["request_id"], role)]
        assert [r["client_id"] for r in part["inputs"]] == [i for i in range(60) if answered_by[i] == version]
    assert len(by_role[(mixed["request_id"], "shadow")]["inputs"]) == 60

    cli = Path(sys.executable).parent / "thimble-modelops"
    shown = subprocess.run(
        [str(cli), "compare", "churn", "--topic", topic],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={
            "COLUMNS": "200",
            "PATH": "/usr/bin:/bin",
            "THIMBLE_KAFKA__BOOTSTRAP_SERVERS": kafka_config["bootstrap.servers"],
        },
    )
    assert shown.returncode == 0, shown.stderr
    lines = {line.split("│")[1].strip(): line for line in shown.stdout.splitlines() if line.count("│") > 3}
    assert set(lines) >= {"churn@prod", "churn@canary", "churn@shadow"}
    assert "shadow" in lines["churn@shadow"]
    assert "p_churn=0.000" in lines["churn@shadow"]  # identical outputs: no drift against the primary
