from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from thimble.modelops import Registry, Tracker, _drift
from thimble.modelops.config import load_modelops_settings
from thimble.modelops.dashboard import create_dashboard
from thimble.modelops.server import create_app

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
            "modelops": {"registry": saved_churn.url, "server": {"auth_token": "tok-docs-1"}},
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
