"""An app whose module loads the settings at import time, as a user's module reading its own Redis does."""

from __future__ import annotations

import os

from thimble.common.config import load_settings
from thimble.consumer import App, ConsumerSettings, Context

SETTINGS = load_settings(ConsumerSettings)  # at import time, before the consumer starts

app = App("consumer-config-test")


@app.handler(source=os.environ["THIMBLE_TEST_SRC"], sink=os.environ["THIMBLE_TEST_DST"])
def describe(event: dict[str, int], ctx: Context) -> dict[str, object]:
    return {
        "id": event["id"],
        "import_time_url": SETTINGS.online_store.url,
        "import_time_prefix": SETTINGS.online_store.key_prefix,
        "context_prefix": ctx.settings.online_store.key_prefix,
        "context_redis_db": ctx.redis.connection_pool.connection_kwargs.get("db"),
        "context_redis_ping": ctx.redis.ping(),
    }
