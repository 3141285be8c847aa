"""A handler reaches the settings its consumer runs with through its Context."""

from __future__ import annotations

import pytest

from thimble.common.config import load_settings
from thimble.consumer import App, ConsumerSettings, Context, TestClient

pytestmark = pytest.mark.unit


def test_a_handler_sees_the_running_settings() -> None:
    app = App("context-settings")

    @app.handler(source="in", sink="out")
    def describe(event: dict[str, int], ctx: Context) -> dict[str, object]:
        store = ctx.settings.online_store
        return {
            "id": event["id"],
            "prefix": store.key_prefix,
            "db": ctx.redis.connection_pool.connection_kwargs["db"],
        }

    settings = load_settings(
        ConsumerSettings, overrides={"online_store": {"url": "redis://127.0.0.1:6379/5", "key_prefix": "p-7"}}
    )
    with TestClient(app, settings) as t:
        t.send("in", {"id": 1})
        assert t.outputs("out") == [{"id": 1, "prefix": "p-7", "db": 5}]
