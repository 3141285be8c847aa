import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from thimble.common import Metrics, MetricsServer, metric_name
from thimble.common.metrics import write_textfile

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
