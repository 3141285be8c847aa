"""Prometheus metrics with one naming convention: ``thimble_<package>_<name>_<unit>``.

Long-running processes expose ``/metrics`` (with ``/healthz`` and ``/readyz``) through
:class:`MetricsServer`; batch jobs write a node-exporter textfile or push to a Pushgateway.
"""

from __future__ import annotations

import re
import threading
from bisect import bisect_left
from collections.abc import Callable, Sequence
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    push_to_gateway,
    write_to_textfile,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")
UNITS = frozenset(
    {
        "total",
        "seconds",
        "bytes",
        "messages",
        "rows",
        "records",
        "requests",
        "ratio",
        "info",
        "batches",
        "errors",
        "predictions",
        "value",
    }
)


def metric_name(package: str, name: str, unit: str) -> str:
    """The full metric name ``thimble_<package>_<name>_<unit>`` (validated)."""
    for part in (package, name, unit):
        if not _SNAKE.match(part):
            raise ValueError(f"metric name parts must be snake_case, got {part!r}")
    if unit not in UNITS:
        raise ValueError(f"unknown metric unit {unit!r}; use one of {sorted(UNITS)}")
    return f"thimble_{package}_{name}_{unit}"


class Metrics:
    """Creates a package's metrics in one registry, named by the convention.

    >>> m = Metrics("consumer", CollectorRegistry())
    >>> m.counter("consumed", "messages", "Messages read from Kafka", ["topic"])._name
    'thimble_consumer_consumed_messages'
    """

    def __init__(self, package: str, registry: CollectorRegistry | None = None) -> None:
        self.package = package
        self.registry = registry if registry is not None else REGISTRY

    def counter(self, name: str, unit: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        """A counter; Prometheus exposes it with a ``_total`` suffix."""
        return Counter(metric_name(self.package, name, unit), documentation, labels, registry=self.registry)

    def gauge(self, name: str, unit: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
        """A gauge."""
        return Gauge(metric_name(self.package, name, unit), documentation, labels, registry=self.registry)

    def histogram(
        self,
        name: str,
        unit: str,
        documentation: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = Histogram.DEFAULT_BUCKETS,
    ) -> Histogram:
        """A histogram."""
        return Histogram(
            metric_name(self.package, name, unit),
            documentation,
            labels,
            registry=self.registry,
            buckets=buckets,
        )


def observe_many(histogram: Histogram, values: Sequence[float]) -> None:
    """``histogram.observe`` for many values, one increment per bucket (prometheus_client internals,
    with the public path as a fallback)."""
    buckets = getattr(histogram, "_buckets", None)
    upper = getattr(histogram, "_upper_bounds", None)
    total = getattr(histogram, "_sum", None)
    if buckets is None or upper is None or total is None or len(buckets) != len(upper):
        for value in values:
            histogram.observe(value)
        return
    counts = [0] * len(upper)
    for value in values:
        counts[bisect_left(upper, value)] += 1
    for bucket, count in zip(buckets, counts, strict=True):
        if count:
            bucket.inc(count)
    total.inc(sum(values))


class MetricBuffer:
    """A metric child on a hot path: :attr:`add` only keeps a value in the process, and :meth:`flush`
    writes what was kept since the last flush in one go (see :func:`histogram_buffer`,
    :func:`counter_buffer`). Adding from several threads is safe: a value added while a flush runs goes
    with the next one."""

    def __init__(self, write: Callable[[list[float]], None]) -> None:
        self._kept: list[float] = []
        self._write = write
        self.add: Callable[[float], None] = self._kept.append

    def flush(self) -> None:
        kept = self._kept
        taken = kept[:]
        if taken:
            del kept[: len(taken)]
            self._write(taken)


def histogram_buffer(histogram: Histogram) -> MetricBuffer:
    """Observations of ``histogram``, written one update per bucket."""
    return MetricBuffer(partial(observe_many, histogram))


def counter_buffer(counter: Counter) -> MetricBuffer:
    """Increments of ``counter``, written as one."""
    return MetricBuffer(lambda amounts: counter.inc(sum(amounts)))


HealthCheck = Callable[[], bool]


class MetricsServer:
    """Serves ``/metrics``, ``/healthz`` (process alive) and ``/readyz`` (``ready()`` is true) on one port."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 9400,
        registry: CollectorRegistry | None = None,
        ready: HealthCheck = lambda: True,
    ) -> None:
        exposed: CollectorRegistry = registry if registry is not None else REGISTRY

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(exposed), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._send(200, b"ok\n")
                elif path == "/readyz":
                    ok = ready()
                    self._send(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
                else:
                    self._send(404, b"not found\n")

            def _send(
                self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8"
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        try:
            self._server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise OSError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="thimble-metrics", daemon=True
        )

    @property
    def port(self) -> int:
        """The bound port (useful when started with port 0)."""
        return int(self._server.server_address[1])

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()


def write_textfile(path: str | Path, registry: CollectorRegistry | None = None) -> None:
    """Write the registry atomically in the node-exporter textfile format (for batch jobs)."""
    write_to_textfile(str(path), registry if registry is not None else REGISTRY)


def push(gateway_url: str, job: str, registry: CollectorRegistry | None = None) -> None:
    """Push the registry to a Prometheus Pushgateway (for batch jobs)."""
    push_to_gateway(gateway_url, job=job, registry=registry if registry is not None else REGISTRY)
