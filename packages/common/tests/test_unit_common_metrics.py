import math
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from thimble.common import Metrics, MetricsServer, metric_name
from thimble.common.metrics import counter_buffer, histogram_buffer, write_textfile

pytestmark = pytest.mark.unit


def test_names_follow_the_convention() -> None:
    assert metric_name("consumer", "handler_latency", "seconds") == "thimble_consumer_handler_latency_seconds"


@pytest.mark.parametrize(
    ("package", "name", "unit"),
    [("Consumer", "x", "seconds"), ("etl", "rows-read", "rows"), ("etl", "rows", "furlongs")],
)
def test_bad_names_are_rejected(package: str, name: str, unit: str) -> None:
    with pytest.raises(ValueError, match=r"snake_case|unknown metric unit"):
        metric_name(package, name, unit)


def test_metrics_exposed_over_http_with_health_and_readiness() -> None:
    registry = CollectorRegistry()
    metrics = Metrics("consumer", registry)
    consumed = metrics.counter("consumed", "messages", "Messages read", ["topic"])
    latency = metrics.histogram("handler_latency", "seconds", "Handler time")
    consumed.labels(topic="t").inc(3)
    latency.observe(0.01)
    ready = {"value": False}
    server = MetricsServer(port=0, registry=registry, ready=lambda: ready["value"]).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        body = urllib.request.urlopen(f"{base}/metrics").read().decode()
        assert 'thimble_consumer_consumed_messages_total{topic="t"} 3.0' in body
        assert "thimble_consumer_handler_latency_seconds_bucket" in body
        assert urllib.request.urlopen(f"{base}/healthz").status == 200
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{base}/readyz")
        assert err.value.code == 503
        ready["value"] = True
        assert urllib.request.urlopen(f"{base}/readyz").status == 200
    finally:
        server.stop()


def test_taken_port_is_reported_clearly() -> None:
    first = MetricsServer(port=0, registry=CollectorRegistry())
    try:
        with pytest.raises(OSError, match=f"cannot serve metrics on 127.0.0.1:{first.port}"):
            MetricsServer(port=first.port, registry=CollectorRegistry())
    finally:
        first.stop()


def test_batch_jobs_write_a_textfile(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    Metrics("etl", registry).gauge("rows_written", "rows", "Rows written").set(10)
    path = tmp_path / "etl.prom"
    write_textfile(path, registry)
    assert "thimble_etl_rows_written_rows 10.0" in path.read_text()


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


BOUNDS = (0.001, 0.01, 0.1, 1.0, 10.0)


@settings(max_examples=200, deadline=None)
@given(
    batches=st.lists(
        st.lists(
            st.one_of(
                st.sampled_from(BOUNDS),  # a value on a bound belongs to that bucket (le)
                st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
                st.just(math.inf),
            ),
            max_size=30,
        ),
        max_size=5,
    )
)
def test_a_buffered_histogram_exposes_what_observing_each_value_exposes(batches: list[list[float]]) -> None:
    plain, buffered = CollectorRegistry(), CollectorRegistry()
    reference = Metrics("test", plain).histogram("call", "seconds", "d", ["h"], BOUNDS).labels("a")
    under_test = histogram_buffer(
        Metrics("test", buffered).histogram("call", "seconds", "d", ["h"], BOUNDS).labels("a")
    )
    for batch in batches:
        for value in batch:
            reference.observe(value)
            under_test.add(value)
        under_test.flush()
        assert _samples(buffered) == pytest.approx(_samples(plain), nan_ok=True)


def test_buffered_metrics_show_nothing_until_flushed_and_count_each_value_once() -> None:
    registry = CollectorRegistry()
    metrics = Metrics("test", registry)
    latency = histogram_buffer(metrics.histogram("call", "seconds", "d", buckets=BOUNDS))
    rows = counter_buffer(metrics.counter("predicted", "rows", "d"))
    latency.add(0.5)
    rows.add(3)
    assert registry.get_sample_value("thimble_test_call_seconds_count") == 0
    assert registry.get_sample_value("thimble_test_predicted_rows_total") == 0
    for _ in range(2):
        latency.flush()
        rows.flush()
        assert registry.get_sample_value("thimble_test_call_seconds_count") == 1
        assert registry.get_sample_value("thimble_test_call_seconds_bucket", {"le": "1.0"}) == 1
        assert registry.get_sample_value("thimble_test_predicted_rows_total") == 3


def test_values_observed_from_threads_while_flushing_are_each_counted_once() -> None:
    registry = CollectorRegistry()
    metrics = Metrics("test", registry)
    latency = histogram_buffer(metrics.histogram("call", "seconds", "d", buckets=BOUNDS))
    rows = counter_buffer(metrics.counter("predicted", "rows", "d"))
    threads, per_thread = 4, 20_000
    done = threading.Event()

    def observe() -> None:
        for _ in range(per_thread):
            latency.add(0.05)
            rows.add(1)

    def flush_until_done() -> None:
        while not done.is_set():
            latency.flush()
            rows.flush()

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads take turns between any two bytecodes, a flush's included
    try:
        flusher = threading.Thread(target=flush_until_done)
        flusher.start()
        workers = [threading.Thread(target=observe) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        done.set()
        flusher.join()
    finally:
        sys.setswitchinterval(switch)
    latency.flush()
    rows.flush()
    assert registry.get_sample_value("thimble_test_call_seconds_count") == threads * per_thread
    assert registry.get_sample_value("thimble_test_call_seconds_sum") == pytest.approx(
        threads * per_thread * 0.05
    )
    assert registry.get_sample_value("thimble_test_predicted_rows_total") == threads * per_thread
