"""Offset tracking: only offsets whose predecessors are all complete are ever stored."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from thimble.consumer import DeliveryError
from thimble.consumer._delivery import OffsetTracker, Pending
from thimble.consumer._processing import RetryPolicy
from thimble.consumer._transport import KafkaTransport

pytestmark = pytest.mark.unit


def test_offsets_advance_over_completed_prefix_only() -> None:
    tracker = OffsetTracker()
    p = [Pending() for _ in range(4)]
    for offset, pending in enumerate(p):
        tracker.track(("t", 0), 10 + offset, pending)
    p[1].done()
    assert tracker.completed() == []  # 10 is still open
    p[0].done()
    p[3].hold()
    p[3].done()
    [tp] = tracker.completed()
    assert (tp.topic, tp.partition, tp.offset) == ("t", 0, 12)
    p[2].done()
    assert tracker.completed()[0].offset == 13  # 13 itself waits for its output's ack
    assert tracker.completed() == []
    p[3].release()
    assert tracker.completed()[0].offset == 14
    assert tracker.inflight() == 0


def test_waiting_since_is_the_oldest_processed_message_awaiting_an_ack() -> None:
    tracker = OffsetTracker()
    handling, waiting, later = Pending(), Pending(), Pending()
    tracker.track(("t", 0), 0, handling)  # its handler still runs: not waiting for an acknowledgement
    assert tracker.waiting_since() is None
    waiting.hold()
    waiting.done()
    tracker.track(("t", 1), 0, waiting)
    later.hold()
    later.done()
    tracker.track(("t", 1), 1, later)
    since = tracker.waiting_since()
    assert since is not None
    waiting.release()
    assert tracker.completed()[0].offset == 1
    assert (tracker.waiting_since() or 0) >= since  # now its successor
    later.release()
    tracker.completed()
    assert tracker.waiting_since() is None


def test_a_failed_delivery_stops_the_partition() -> None:
    tracker = OffsetTracker()
    ok, bad, after = Pending(), Pending(), Pending()
    for offset, pending in enumerate((ok, bad, after)):
        tracker.track(("t", 1), offset, pending)
    ok.done()
    bad.hold()
    bad.done()
    bad.fail(RuntimeError("broker said no"))
    after.done()
    with pytest.raises(DeliveryError, match="broker said no"):
        tracker.completed()
    with pytest.raises(DeliveryError):
        tracker.completed()  # never moves past it


def test_exactly_once_positions_and_forget() -> None:
    tracker = OffsetTracker()
    a, b = Pending(), Pending()
    tracker.track(("t", 0), 5, a)
    tracker.track(("t", 1), 7, b)
    a.done()
    assert [(tp.partition, tp.offset) for tp in tracker.processed_positions()] == [(0, 6)]
    tracker.forget({("t", 1)})
    b.done()
    assert tracker.processed_positions() == []


def test_backoff_is_exponential_bounded_and_jittered() -> None:
    policy = RetryPolicy(max_retries=5, backoff_ms=100, backoff_max_ms=400)
    for retry, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.4)]:
        delays = {policy.delay_s(retry) for _ in range(20)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1


@pytest.mark.parametrize("headers", [None, [("source", b"orders")]])
def test_a_record_sent_with_its_arguments_by_position_reports_to_its_pending(
    headers: list[tuple[str, bytes | None]] | None,
) -> None:
    """The transport passes ``produce`` its callback by position: the fifth argument must be it."""
    producer = Producer({"bootstrap.servers": "127.0.0.1:1", "message.timeout.ms": 50})
    pending = Pending()
    KafkaTransport(producer).send("orders-out", b"k", b"v", headers, pending)
    assert pending.remaining == 2

    producer.flush(10)

    assert pending.remaining == 1
    assert isinstance(pending.error, DeliveryError)
    assert "orders-out" in str(pending.error)
