from __future__ import annotations

import math
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from pydantic import BaseModel

from thimble.modelops import ModelContext, ModelOpsError, Registry, Tracker, _drift, model
from thimble.modelops.config import load_modelops_settings
from thimble.modelops.dashboard import create_dashboard
from thimble.modelops.server import create_app
from thimble.testing import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _chromium(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=15000",
            "--window-size=1400,1800",
            *extra,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _history(registry: Registry) -> Tracker:
    tracker = Tracker(Path(registry.root) / "_tracking.sqlite")
    info = registry.info("churn@1")
    base = info.baseline["output.p_churn"]
    rng = np.random.default_rng(0)
    now = time.time()
    for i in range(6):
        values = np.clip(rng.beta(2, 5 - i * 0.5, 500), 0, 1)
        tracker.record(
            "churn",
            1,
            "serve",
            "serve-test",
            {
                "requests": 500,
                "rows": 500,
                "latency.p50_ms": 1.0 + i * 0.1,
                "latency.p99_ms": 4.0 + i,
                "psi.output.p_churn": _drift.psi(base, values) or 0.0,
                "psi.input.spend_7d": 0.02 * i,
            },
            {"output.p_churn": _drift.histogram(values, base.edges)},
            at=now - 3600 + i * 600,
        )
    tracker.record(
        "churn",
        1,
        "batch",
        "batch-test",
        {"rows": 1000, "psi.output.p_churn": 0.05},
        {"output.p_churn": base},
        at=now,
    )
    return tracker


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed (./dev setup installs it)")
def test_dashboard_renders_its_charts_in_headless_chromium(
    saved_churn: Registry, live: Callable[..., Any], tmp_path: Path
) -> None:
    tracker = _history(saved_churn)
    server = live(create_dashboard(tracker))
    page = httpx.get(server.url).text
    assert "/static/plotly.min.js" in page
    assert "cdn" not in page.lower()
    assert httpx.get(f"{server.url}/static/plotly.min.js").status_code == 200

    dom = _chromium(server.url, tmp_path / "profile", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    for kind in ("distribution", "drift", "latency", "volume"):
        assert f'id="chart-churn-1-{kind}"' in html
    assert html.count('class="chart chart-') == 4
    assert html.count("js-plotly-plot") >= 4
    assert "heatmaplayer" in html or "hm" in html
    assert html.count('class="scatterlayer') >= 3
    assert "Prediction distribution over time" in html
    assert "Drift against the training sample (PSI)" in html

    shot = tmp_path / "dashboard.png"
    result = _chromium(server.url, tmp_path / "profile2", f"--screenshot={shot}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.stat().st_size > 20_000


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed (./dev setup installs it)")
def test_the_server_docs_render_offline_in_headless_chromium(
    saved_churn: Registry, redis_url: str, live: Callable[..., Any], tmp_path: Path
) -> None:
    settings = load_modelops_settings(
        overrides={
            "online_store": {"url": redis_url},
            "modelops": {"registry": saved_churn.url, "server": {"auth_token": "tok-docs-0123456789"}},
        }
    )
    server = live(create_app(settings=settings, refs=["churn@prod"], registry=saved_churn))
    page = httpx.get(f"{server.url}/docs").text
    assert "/docs/assets/swagger-ui-bundle.js" in page
    assert "cdn" not in page.lower()
    assert httpx.get(f"{server.url}/docs/assets/swagger-ui-bundle.js").status_code == 200
    spec = httpx.get(f"{server.url}/openapi.json").json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert spec["paths"]["/v1/models"]["get"]["security"] == [{"HTTPBearer": []}]
    for path in ("/healthz", "/readyz", "/metrics"):
        assert "application/json" not in spec["paths"][path]["get"]["responses"]["200"]["content"]

    dom = _chromium(f"{server.url}/docs", tmp_path / "profile", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "opblock" in dom.stdout
    assert "/v1/models/churn@prod/predict" in dom.stdout
    assert "authorize" in dom.stdout.lower()


class Big(BaseModel):
    x: float


class Echo(BaseModel):
    y: float


@model(name="echo")
def echo(ctx: ModelContext, rows: list[Big]) -> list[Echo]:
    return [Echo(y=r.x) for r in rows]


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # numpy, on the mean of the window
def test_one_bad_record_does_not_take_the_dashboard_down(
    registry: Registry, redis_url: str, live: Callable[..., Any]
) -> None:
    with pytest.raises(ModelOpsError, match="metrics must be finite numbers: auc=nan"):
        registry.save(echo, metrics={"auc": float("nan")}, pickle_function=True)
    registry.save(echo, metrics={"auc": 0.9}, sample=[{"x": 1.0}, {"x": 2.0}], pickle_function=True)
    tracker = registry.tracker()
    with sqlite3.connect(tracker.path) as conn:  # what 0.1.0 recorded for `save --metric auc=nan`
        conn.execute(
            "INSERT INTO records (time, model, version, source, run_id, metrics, distributions, info) "
            "VALUES (?, 'atk-p', 1, 'save', 'save-1', '{\"train.auc\": null}', '{}', '{}')",
            (time.time(),),
        )
    settings = load_modelops_settings(
        overrides={
            "online_store": {"url": redis_url},
            "modelops": {"registry": registry.url, "server": {"tracking_interval_s": 0.2}},
        }
    )
    server = live(create_app(settings=settings, refs=["echo"], registry=registry))
    # two finite outputs whose sum overflows: the serving window still records their (finite) mean
    scored = httpx.post(f"{server.url}/v1/models/echo/predict", json=[{"x": 1.7e308}, {"x": 1.7e308}])
    assert scored.status_code == 200
    wait_until(lambda: any(r.source == "serve" for r in tracker.records("echo")), 10, what="a serving window")
    window = next(r for r in tracker.records("echo") if r.source == "serve")
    assert window.metrics["rows"] == 2
    assert math.isfinite(window.metrics["prediction.y.mean"])
    assert "not_finite" not in window.info

    dash = live(create_dashboard(tracker))
    page = httpx.get(dash.url)
    assert page.status_code == 200
    assert "data-model='echo'" in page.text
    assert "chart-echo-1-volume" in page.text
    assert "not drawn: metric train.auc: null is not a finite number" in page.text
    for params in ({"version": "99999999999999999999"}, {"version": "0"}, {"model": "A" * 5000}):
        refused = httpx.get(f"{dash.url}/api/records", params=params)
        assert refused.status_code == 422, params
        assert isinstance(refused.json()["detail"], str)
        assert len(refused.content) < 300
    (legacy,) = httpx.get(f"{dash.url}/api/records", params={"model": "atk-p", "version": "1"}).json()
    assert legacy["metrics"] == {}
    assert legacy["problems"] == ["metric train.auc: null is not a finite number"]
