"""``run --config FILE`` reaches every settings load of the process, and handlers get them through Context."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest

from thimble.testing import produce

pytestmark = pytest.mark.integration

APP = str(Path(__file__).with_name("consumer_config_app.py")) + ":app"


def test_settings_loaded_at_import_time_see_the_config_file(
    kafka_topic, kafka_config, reader, tmp_path
) -> None:
    src, dst = kafka_topic("src"), kafka_topic("dst")
    prefix = f"features-{uuid.uuid4().hex[:8]}"
    config = tmp_path / "thimble.yaml"
    config.write_text(
        f"kafka:\n  bootstrap_servers: {kafka_config['bootstrap.servers']}\n"
        f"online_store:\n  url: redis://127.0.0.1:6379/3\n  key_prefix: {prefix}\n"
        "metrics:\n  port: 0\nconsumer:\n  create_topics: true\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("THIMBLE_")}
    env |= {"THIMBLE_TEST_SRC": src, "THIMBLE_TEST_DST": dst}
    exe = str(Path(sys.executable).with_name("thimble-consumer"))
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [exe, "run", APP, "--config", str(config), "--group-id", src],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=out,
        )
    try:
        produce(kafka_config, src, [(1, {"id": 1})])
        [record] = reader(dst).wait_for(1, timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert orjson.loads(record.value()) == {
        "id": 1,
        "import_time_url": "redis://127.0.0.1:6379/3",
        "import_time_prefix": prefix,
        "context_prefix": prefix,
        "context_redis_db": 3,
        "context_redis_ping": True,
    }, log.read_text()[-2000:]
