"""A stateful count on the real broker and Redis stays exact when its events come again: after kill -9
before the offsets were committed, and when a second group reads the whole topic again."""

from __future__ import annotations

import os
import random
import signal
import uuid
from pathlib import Path

import orjson
import pytest
import redis

from thimble.common.features import FeatureSet
from thimble.consumer import group_lag
from thimble.testing import produce, wait_until

from .conftest import make_settings, start_cli
from .consumer_stateful_app import Totals

pytestmark = pytest.mark.integration

N = 3000
ENTITIES = 25
APP = str(Path(__file__).with_name("consumer_stateful_app.py")) + ":app"


def test_a_count_stays_exact_through_kill_9_and_a_replay_of_the_whole_topic(
    kafka_topic, kafka_config, reader, redis_url, thimble_settings, tmp_path
) -> None:
    src, dst = kafka_topic("src", partitions=3), kafka_topic("dst")
    name = f"totals-{uuid.uuid4().hex[:8]}"
    # Keyed by id: every entity gets events from every partition, whose owners write it side by side.
    events = [{"id": i, "entity": f"e{i % ENTITIES}", "amount": i % 7} for i in range(N)]
    produce(kafka_config, src, [(e["id"], e) for e in events])
    keys = {
        f"e{n}": FeatureSet(name, Totals, entity_key="entity", event_time="at").online_key(
            thimble_settings.online_store.key_prefix, f"e{n}"
        )
        for n in range(ENTITIES)
    }
    client = redis.Redis.from_url(redis_url)
    out = reader(dst)
    # A killed member's partitions move on after 6 s, not the default 45 s.
    env = {"THIMBLE_TEST_FEATURE_SET": name, "THIMBLE_CONSUMER__SESSION_TIMEOUT_MS": "6000"}
    log = tmp_path / "run.log"

    def stored() -> dict[str, dict[str, object]]:
        pipe = client.pipeline(transaction=False)
        for key in keys.values():
            pipe.hgetall(key)
        return {
            entity: {k.decode(): orjson.loads(v) for k, v in h.items()}
            for entity, h in zip(keys, pipe.execute(), strict=True)
        }

    def counted() -> int:
        return sum(int(h.get("count", 0)) for h in stored().values())  # type: ignore[call-overload]

    def caught_up(group: str) -> bool:
        lags = group_lag(make_settings(kafka_config, group), group, [src])
        return all(p.committed is not None and p.lag == 0 for p in lags)

    def finish(group: str) -> None:
        proc = start_cli(src, dst, group, log=log, env=env, app=APP)
        try:
            wait_until(lambda: caught_up(group), 90, what=f"group {group} committed every offset")
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(40) == 0, log.read_text()[-3000:]

    rng = random.Random(11)
    for _kill in range(2):
        proc = start_cli(src, dst, src, sleep_ms=1, log=log, env=env, app=APP)
        target = counted() + rng.randint(300, 900)
        wait_until(lambda t=target: counted() >= t, 60, what="progress before the kill")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finish(src)

    expected = {f"e{n}": [e for e in events if e["entity"] == f"e{n}"] for n in range(ENTITIES)}
    after_kills = stored()
    for entity, mine in expected.items():
        assert (after_kills[entity]["count"], after_kills[entity]["total"]) == (
            len(mine),
            sum(e["amount"] for e in mine),  # type: ignore[misc]
        ), entity
    # Every entity's final state went out; a state applied but not sent before a kill is replaced by the
    # entity's state when its event comes again, so fewer than N states may be sent, never a wrong one.
    final = {(entity, len(mine)) for entity, mine in expected.items()}

    def sent() -> set[tuple[str, int]]:
        return {(r["entity"], r["count"]) for r in (orjson.loads(m.value()) for m in out.poll())}

    wait_until(lambda: final <= sent(), 30, what="every entity's final state sent")
    assert all(1 <= count <= len(expected[entity]) for entity, count in sent())
    emitted = len(out.poll())

    # Another group reads every event again: nothing is applied twice, not one state is written.
    finish(f"{src}-replay")
    assert stored() == after_kills
    wait_until(lambda: len(out.poll()) > emitted, 30, what="the replay sends the current states again")
    replayed = [orjson.loads(m.value()) for m in out.poll()[emitted:]]
    assert {(r["entity"], r["count"]) for r in replayed} <= {(e, h["count"]) for e, h in after_kills.items()}
