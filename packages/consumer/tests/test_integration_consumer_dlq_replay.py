"""`dlq replay` against the real broker: transactional dead-letter topics, resuming, filters, tombstones."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from pydantic import BaseModel

from thimble.consumer import App
from thimble.consumer._dead_letters import ERROR_CLASS, ORIGINAL_TOPIC, REPLAYED_FROM
from thimble.consumer._dlq_replay import ReplayReport, replay
from thimble.testing import produce, wait_until

from .conftest import make_settings

pytestmark = pytest.mark.integration


class Event(BaseModel):
    id: int
    poison: bool = False


def _replay_in_thread(timeout: float, *args: Any, **kwargs: Any) -> ReplayReport:
    """``replay`` that must end within ``timeout`` seconds."""
    result: list[Any] = []

    def target() -> None:
        try:
            result.append(replay(*args, **kwargs))
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "the replay did not end"
    if isinstance(result[0], BaseException):
        raise result[0]
    report = result[0]
    assert isinstance(report, ReplayReport)
    return report


def test_replay_of_an_exactly_once_dead_letter_topic_ends_and_keeps_tombstones(
    kafka_topic, kafka_config, reader, start_app
) -> None:
    src, dst = kafka_topic("src", partitions=2), kafka_topic("dst")
    app = App("replay-eos")

    @app.handler(source=src, sink=dst)
    def strict(event: Event) -> Event:
        if event.poison:
            raise ValueError(f"poison {event.id}")
        return event

    settings = make_settings(kafka_config, src, exactly_once=True)
    records: list[tuple[Any, Any]] = [(i, {"id": i, "poison": i % 3 == 0}) for i in range(9)]
    produce(kafka_config, src, records)
    produce(kafka_config, src, [(b"99", None)])  # a tombstone cannot be decoded: dead-lettered
    running = start_app(app, settings)
    dlq = reader(f"{src}.dlq").wait_for(4)
    assert running.stop() == 0
    tombstones = [m for m in dlq if m.value() is None]
    assert [m.key() for m in tombstones] == [b"99"], "a tombstone is dead-lettered as a tombstone"

    report = _replay_in_thread(30, settings, f"{src}.dlq")
    assert (report.replayed, report.skipped) == (4, 0)
    source = reader(src).wait_for(14)
    replayed = [m for m in source if dict(m.headers() or []).get(REPLAYED_FROM)]
    assert len(replayed) == 4
    assert [m.value() for m in replayed if m.key() == b"99"] == [None], "replayed as a tombstone"
    again = _replay_in_thread(30, settings, f"{src}.dlq")
    assert (again.replayed, again.skipped) == (0, 0)  # progress was committed


def test_interrupted_replay_resumes_and_a_filter_leaves_what_it_skipped(
    kafka_topic, kafka_config, reader
) -> None:
    dlq, target = kafka_topic("dlq"), kafka_topic("target")
    classes = ["ValueError", "KeyError"] * 5
    for i, klass in enumerate(classes):
        produce(
            kafka_config,
            dlq,
            [(i, {"id": i})],
            headers=[(ORIGINAL_TOPIC, target.encode()), (ERROR_CLASS, klass.encode())],
        )
    settings = make_settings(kafka_config, dlq)

    # Interrupted after the third dead letter: those three are committed and not sent again.
    def interrupt(_topic: str, offset: int, _klass: str) -> None:
        if offset == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        replay(settings, dlq, error_class="Error", on_record=interrupt)
    out = reader(target)
    wait_until(lambda: len(out.poll()) >= 3, 30, what="the first three replayed")

    # A filtered replay: the KeyErrors it skips stay to be replayed.
    filtered = _replay_in_thread(30, settings, dlq, error_class="ValueError")
    assert (filtered.replayed, filtered.skipped) == (3, 4)  # offsets 4, 6, 8; skips 3, 5, 7, 9
    rest = _replay_in_thread(30, settings, dlq)
    # From the first skipped (offset 3) on: every KeyError, and the ValueErrors behind it again.
    assert (rest.replayed, rest.skipped) == (7, 0)
    wait_until(lambda: len(out.poll()) >= 3 + 3 + 7, 30, what="every replayed record")
    replayed_from = [dict(m.headers())[REPLAYED_FROM].decode().rsplit("/", 1)[1] for m in out.records]
    key_errors = {str(i) for i, k in enumerate(classes) if k == "KeyError"}
    assert key_errors <= set(replayed_from)
    assert sorted(replayed_from[:3]) == ["0", "1", "2"]
    assert len(out.poll()) == 13
