"""The consumer's Prometheus metrics (``thimble_consumer_<name>_<unit>``)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from thimble.common.metrics import Metrics, histogram_buffer

LATENCY_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0)
BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 5000)


class ConsumerMetrics:
    """Every metric of one consumer process, in one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        m = Metrics("consumer", self.registry)
        self.consumed = m.counter("consumed", "messages", "Messages read from Kafka", ["topic"])
        self.processed = m.counter(
            "processed", "messages", "Messages handled with every output dispatched", ["handler"]
        )
        self.failed = m.counter("failed", "messages", "Messages that failed, by stage", ["handler", "stage"])
        self.retried = m.counter(
            "retried", "messages", "Handler retries after a retriable error", ["handler"]
        )
        self.dead_lettered = m.counter(
            "dead_lettered", "messages", "Messages sent to a dead-letter topic", ["handler"]
        )
        self.latency = m.histogram(
            "handler_latency", "seconds", "Handler call duration", ["handler"], LATENCY_BUCKETS
        )
        self.batch_size = m.histogram(
            "batch_size", "messages", "Batch handler batch sizes", ["handler"], BATCH_BUCKETS
        )
        self.lag = m.gauge("lag", "messages", "Messages behind the high watermark", ["topic", "partition"])
        self.assigned = m.gauge("assigned_partitions", "total", "Partitions assigned to this process")
        self.rebalances = m.counter("rebalances", "total", "Partition assignments and revocations", ["kind"])
        self.transactions = m.counter(
            "transactions",
            "total",
            "Exactly-once transactions ended, by outcome (committed, aborted)",
            ["outcome"],
        )
        self.state_skipped = m.counter(
            "state_skipped",
            "messages",
            "Events a stateful handler had applied already (delivered again)",
            ["handler"],
        )
        self.state_conflicts = m.counter(
            "state_conflicts",
            "total",
            "State writes that lost their compare-and-set and were applied again",
            ["handler"],
        )

    def handler(self, name: str) -> HandlerMetrics:
        return HandlerMetrics(self, name)


class HandlerMetrics:
    """The metrics of one handler, labels bound once.

    The hot path only appends to local buffers (``count_processed``, ``observe_latency``);
    :meth:`flush` moves them into Prometheus once per polled batch.
    """

    def __init__(self, metrics: ConsumerMetrics, name: str) -> None:
        self._metrics = metrics
        self._name = name
        self.processed: Counter = metrics.processed.labels(name)
        self.retried: Counter = metrics.retried.labels(name)
        self.dead_lettered: Counter = metrics.dead_lettered.labels(name)
        self.latency: Histogram = metrics.latency.labels(name)
        self.batch_size: Histogram = metrics.batch_size.labels(name)
        self._failed: dict[str, Any] = {}
        self.unpublished_processed = 0  # the hot path adds to it; flush publishes it
        self._latency = histogram_buffer(self.latency)
        self.observe_latency = self._latency.add

    def count_processed(self, n: int) -> None:
        self.unpublished_processed += n

    def flush(self) -> None:
        """Publish what the hot path buffered."""
        if self.unpublished_processed:
            self.processed.inc(self.unpublished_processed)
            self.unpublished_processed = 0
        self._latency.flush()

    def state_counters(self) -> tuple[Counter, Counter]:
        """A stateful handler's events skipped as applied already, and its writes that lost the compare-and-set."""
        return self._metrics.state_skipped.labels(self._name), self._metrics.state_conflicts.labels(
            self._name
        )

    def failed(self, stage: str) -> Counter:
        counter = self._failed.get(stage)
        if counter is None:
            counter = self._failed[stage] = self._metrics.failed.labels(self._name, stage)
        return counter
