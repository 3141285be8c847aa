"""Shared fixtures: test models, a temporary registry, a live uvicorn server on loopback."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).parent))

from modelops_testmodels import save_churn

from thimble.modelops import Registry


@pytest.fixture(scope="session")
def churn_clf() -> LogisticRegression:
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.integers(0, 20, 500), rng.normal(50, 20, 500)])
    y = (x[:, 0] < 5).astype(int)
    return LogisticRegression().fit(x, y)


@pytest.fixture(scope="session")
def numbers_clf() -> LogisticRegression:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 4))
    return LogisticRegression().fit(x, (x.sum(axis=1) > 0).astype(int))


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(str(tmp_path / "models"))


@pytest.fixture
def saved_churn(registry: Registry, churn_clf: LogisticRegression) -> Registry:
    """A registry with churn@1 (alias prod), pickled by value so that any process can load it."""
    save_churn(registry, churn_clf)
    return registry


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LiveServer:
    """An ASGI app under a real uvicorn on loopback, in a thread."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False, lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture
def live() -> Iterator[Callable[[Any], LiveServer]]:
    """Factory: ``live(app)`` runs ``app`` under uvicorn on a free loopback port until the test ends."""
    servers: list[LiveServer] = []

    def start(app: Any) -> LiveServer:
        server = LiveServer(app).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__()
