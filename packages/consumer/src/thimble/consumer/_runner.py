"""The run loop: poll, handle on one worker thread, commit what is done.

Threads: one worker thread handles polled batches in order, which keeps every partition in order. The
main thread polls while the worker is busy (pausing the partitions once it has been busy for a while,
so the group never sees a slow handler) and runs the rebalance callbacks of its polls. By default
(``queued_batches=0``) nothing is polled ahead of the handler: a polled message never waits behind a
whole batch, and under the interpreter lock polling ahead would not run alongside the handler anyway.
At-least-once, the worker then polls for itself once it runs out of work, instead of waking the main
thread to poll and being woken in turn; rebalance callbacks of its polls run on it. A thread calls
the consumer only holding ``self._consumer_lock``; the main thread polls and queues a batch under it,
so a batch it polled is always handled before anything the worker polls after.

Both threads touch the pipeline only under ``self._lock``, which the worker holds through a polled
batch but hands over between two messages as soon as a rebalance callback asks for it
(:meth:`Runner._take_lock`), so a revocation waits for at most the message being handled. At-least-once,
the worker feeds a batch's messages in runs (:meth:`Pipeline.feed_run`) that any change it must see
before a message (the lock wanted, a stop, an error, a revocation) ends at the next one, through
``self._interrupt``. Commit decisions live in :mod:`thimble.consumer._delivery`; exactly-once
transactions in :mod:`thimble.consumer._transactions`. Exactly-once, only the main thread calls the
consumer: it takes the group metadata the worker's transactions send, and seeks back to the committed
offsets after an abort.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from prometheus_client import CollectorRegistry

from thimble.common.logging import get_logger
from thimble.common.metrics import MetricsServer
from thimble.consumer import _collector as collector
from thimble.consumer import _delivery
from thimble.consumer import _log_context as log_context
from thimble.consumer._delivery import TP
from thimble.consumer._kafka import (
    HostSlot,
    admin_client,
    committed_offsets,
    consumer_config,
    ensure_topics,
    kafka_client,
    missing_topics,
    producer_config,
    transactional_id,
    wait_for_broker,
)
from thimble.consumer._landing import ParquetFiles
from thimble.consumer._log_context import set_current
from thimble.consumer._metrics import ConsumerMetrics
from thimble.consumer._online_store import RedisBackend
from thimble.consumer._pipeline import Backends, Interrupt, Pipeline
from thimble.consumer._poll_watch import PollWatch
from thimble.consumer._processing import Abandoned
from thimble.consumer._state_store import RedisStates
from thimble.consumer._transactions import Transactions
from thimble.consumer._transport import KafkaTransport
from thimble.consumer.config import ConsumerSettings
from thimble.consumer.context import serve
from thimble.consumer.errors import ConsumerError, DeliveryError
from thimble.consumer.sinks import Topic

if TYPE_CHECKING:
    from thimble.consumer.app import App

log = get_logger(__name__)
CLOSE_BOUND_S = 5.0

LAG_INTERVAL_S = 10.0
POLL_TIMEOUT_S = 0.1
# While handled messages wait for their outputs' acknowledgements, both threads look again this often,
# so an offset is stored soon after its last output is acknowledged, also when no new message comes.
ACK_WAIT_S = 0.005
# At-least-once: every this many messages the worker also serves delivery reports and hands what is
# complete to the polling thread, so a long batch's offsets are stored while it runs, not only at its end.
STORE_EVERY = 128
# A full queue (by default: a busy worker) first just waits for the worker (pausing drops librdkafka's
# prefetched messages, which costs a refetch); only one still full after this long pauses the
# partitions and polls on.
PAUSE_AFTER_S = 1.0
# Exactly-once: an abort (a rebalance, a fenced producer) is retried from the committed offsets; this
# many aborts without a commit in between mean the outputs can never be committed.
MAX_ABORTS_IN_A_ROW = 10
# At-least-once: outputs unacknowledged for this long (at most; a quarter of message.timeout.ms when
# that is shorter) make the main thread check that the output topics exist, and name any that does not.
UNACKED_CHECK_S = 10.0


class Runner:
    """Runs one consumer process of an app: ``Runner(app, settings).run()`` blocks until
    :meth:`request_stop` (or SIGTERM/SIGINT on the main thread) and returns the exit code;
    :meth:`ready` is what ``/readyz`` reports."""

    def __init__(self, app: App, settings: ConsumerSettings, *, worker_index: int = 0) -> None:
        if not app.handlers:
            raise ConsumerError(f"app {app.name!r} has no handler; add one with @app.handler(source=...)")
        self.app = app
        self.settings = settings
        self.resources = serve(settings)  # what handlers reach through Context
        self.cfg = settings.consumer
        self.worker_index = worker_index
        self.group_id = self.cfg.group_id or app.name
        self.client_id = f"{app.name}-{worker_index}"
        if self.cfg.exactly_once:
            stateful = [h for h in app.handlers if h.state is not None]
            if stateful:
                raise ConsumerError(
                    f"exactly_once: stateful handler {stateful[0].where} keeps its state in the online store, "
                    "which cannot join a Kafka transaction; run it at-least-once (its state stays exact)"
                )
            others = [s for h in app.handlers for s in h.sinks if not isinstance(s, Topic)]
            if others:
                raise ConsumerError(
                    f"exactly_once supports topic sinks only; {others[0]!r} cannot join a Kafka transaction"
                )
        self.metrics = ConsumerMetrics(CollectorRegistry())
        self._consumed = {topic: self.metrics.consumed.labels(topic) for topic in app.sources}
        self._stop = threading.Event()
        self._stopping = False  # self._stop.is_set(), read once per message
        self._lock = threading.Lock()
        self._lock_wanted = False  # the main thread waits for the lock: the worker yields it
        # Raised after any change the worker checks before each message (the lock wanted, a stop, a fatal
        # error, an epoch or a rewind), so that a run of messages fed at once ends at the next message.
        self._interrupt = Interrupt()
        self._queue: deque[tuple[int, list[Any]]] = deque()
        self._cond = threading.Condition()
        self._space = threading.Event()
        self._worker_waiting = False  # the worker waits for a polled batch
        self._epoch = 0
        self._revoked_at: dict[TP, int] = {}
        self._assigned: set[TP] = set()
        self._stored: dict[TP, int] = {}  # the offsets last stored, by assigned partition
        self._commits = _delivery.CommitWatch()
        self._paused = False
        self._poll_watch = PollWatch(self.cfg.max_poll_interval_ms)
        self._repause = False
        self._ready = False
        self._broker_ok = True
        self._draining_until: float | None = None
        self._worker_done = threading.Event()
        self._fatal: BaseException | None = None
        self._closing = False
        # Exactly-once: the transactions, this process's slot among the group's on this host, and
        # whether an aborted transaction asks the main thread to seek back to the committed offsets
        # (or a revocation that could not wait for a busy handler asks the worker to abort).
        self._txns: Transactions | None = None
        self._slot: HostSlot | None = None
        self.transactional_id: str | None = None
        self._rewind = False
        self._abort_pending = False
        # Exactly-once: per partition, the epoch and next offset of the last message fed to the pipeline,
        # and the partitions whose messages are skipped because the consumer went back on them.
        self._next_offsets: dict[TP, tuple[int, int]] = {}
        self._went_back: set[TP] = set()
        # Offsets completed on the worker, stored by the thread that polls next: librdkafka starves a
        # thread calling store_offsets while another thread polls, so a thread calls the consumer only
        # holding ``_consumer_lock``. At-least-once without queued batches, the worker polls for itself
        # once it runs out of work, rather than wake the main thread to poll and wait to be woken in
        # turn; the main thread polls while the worker is busy or asks it to (partitions paused, the
        # consumer wanted by the main thread).
        self._consumer_lock = threading.Lock()
        self._consumer_wanted = False  # the main thread waits for the consumer: the worker leaves it
        self._worker_polls = False
        self._worker_polling = False
        self._to_store: list[TopicPartition] = []
        self._store_lock = threading.Lock()
        self._awaiting_acks = False  # handled messages wait for acknowledgements (at-least-once)
        # Since when (time.monotonic()) the longest-waiting handled message awaits its outputs'
        # acknowledgements (worker), and the output topics found missing meanwhile (main thread).
        self._unacked_since: float | None = None
        self._unacked_check_s = UNACKED_CHECK_S
        self._message_timeout_ms = 300_000  # librdkafka's default
        self._next_topic_check = 0.0
        self._missing_outputs: set[str] = set()
        self._fatal_logged = False  # the error that stops the process was logged where it happened
        # The group metadata sent with the offsets, taken on the polling thread (the only one that may
        # call the consumer) after every poll and rebalance, so it carries the latest generation.
        self._group_metadata: Any = None
        self.metrics_server: MetricsServer | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    def request_stop(self) -> None:
        if self._draining_until is None:
            self._draining_until = time.monotonic() + self.cfg.drain_timeout_s
        self._stopping = True
        self._interrupt.raised = True
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    @property
    def fatal(self) -> BaseException | None:
        """The error that stops this consumer, once there is one."""
        return self._fatal

    @fatal.setter
    def fatal(self, error: BaseException | None) -> None:
        self._fatal = error
        self._interrupt.raised = True

    @property
    def producer(self) -> Producer:
        return self.transport.producer

    def ready(self) -> bool:
        return self._ready and self._broker_ok and not self._stop.is_set() and self.fatal is None

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def on_signal(signum: int, _frame: Any) -> None:
            if self._stop.is_set():
                log.warning("second signal: exiting without waiting for the drain")
                raise SystemExit(130)
            log.info("stopping: draining in-flight messages", extra={"signal": signal.Signals(signum).name})
            self.request_stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def run(self) -> int:
        """Consume until stopped; the exit code (0: drained and committed, 1: stopped on a delivery failure)."""
        self._install_signals()
        server = self._start_metrics_server()
        try:
            with log_context.installed():
                return self._run()
        finally:
            if server is not None:
                server.stop()
            if self._slot is not None:
                self._slot.release()

    def _start_metrics_server(self) -> MetricsServer | None:
        m = self.settings.metrics
        if not m.enabled:
            return None
        port = m.port + self.worker_index if m.port else 0
        try:
            server = MetricsServer(m.host, port, self.metrics.registry, ready=self.ready)
        except OSError as exc:
            i = self.worker_index
            worker = f" (worker {i} serves on metrics.port + {i})" if port and i else ""
            raise ConsumerError(
                f"{exc}{worker}; set metrics.port (--metrics-port) to a free port, or 0 for any"
            ) from None
        self.metrics_server = server.start()
        log.info("serving /metrics, /healthz, /readyz", extra={"host": m.host, "port": server.port})
        return server

    def _run(self) -> int:
        kafka = self.settings.kafka
        admin = admin_client(self.settings)
        metadata = wait_for_broker(
            admin, kafka.bootstrap_servers, self._stop.wait, self.cfg.broker_retry_max_s
        )
        if metadata is None:
            return 0
        ensure_topics(
            admin,
            metadata,
            [*self.app.sources, *self.app.output_topics(self.settings)],
            self.cfg.create_topics,
            self.cfg.topic_partitions,
            self.cfg.topic_replication,
            stopped=self._stop.wait,
            max_backoff_s=self.cfg.broker_retry_max_s,
            attempts=None,
        )
        if self._stop.is_set():
            return 0
        if self.cfg.exactly_once:
            self._slot = HostSlot(self.group_id)
            self.transactional_id = transactional_id(self.group_id, self._slot)
            txn_conf = producer_config(self.settings, self.client_id, self.transactional_id)
            txns = self._txns = Transactions(
                lambda: kafka_client(Producer, txn_conf, self.settings, "producer_extra"),
                int(txn_conf["transaction.timeout.ms"]),
                ended=lambda outcome: self.metrics.transactions.labels(outcome).inc(),
            )
            self.transport = KafkaTransport(txns.producer, before_send=txns.begin)
        else:
            producer_conf = producer_config(self.settings, self.client_id)
            self.transport = KafkaTransport(
                kafka_client(Producer, producer_conf, self.settings, "producer_extra")
            )
            timeout_ms: Any = producer_conf.get(
                "message.timeout.ms", producer_conf.get("delivery.timeout.ms")
            )
            if timeout_ms is not None:
                with contextlib.suppress(TypeError, ValueError):  # librdkafka took it: a number
                    self._message_timeout_ms = int(timeout_ms)
            self._unacked_check_s = min(UNACKED_CHECK_S, self._message_timeout_ms / 4000)
        conf = consumer_config(self.settings, self.group_id, self.client_id)
        conf["error_cb"] = self._on_kafka_error
        conf["on_commit"] = self._commits
        self.consumer = kafka_client(Consumer, conf, self.settings, "consumer_extra")
        store = self.settings.online_store
        password = store.password.get_secret_value() if store.password else None
        self.pipeline = Pipeline(
            self.app,
            self.settings,
            Backends(
                self.transport,
                lambda: RedisBackend(store.url, password),
                ParquetFiles(self.settings.warehouse.landing),
                lambda: RedisStates(store.url, password),
            ),
            self.metrics,
            self._stop.wait,
        )
        self._refresh_group_metadata()
        self.consumer.subscribe(
            self.app.sources, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        self._worker_polls = not self.cfg.exactly_once and not self.cfg.queued_batches
        largest_batch = max(
            [self.cfg.poll_batch_size, *(r.batch_size for r in self.pipeline.routes.values())]
        )
        with collector.tuned_for(largest_batch):
            worker = threading.Thread(target=self._work, name="thimble-consumer-worker", daemon=True)
            worker.start()
            self._ready = True
            log.info(
                "consuming",
                extra={
                    "group_id": self.group_id,
                    "topics": self.app.sources,
                    "exactly_once": self.cfg.exactly_once,
                },
            )
            self._poll_watch.start(self._stop)
            self._poll_loop()
            return self._shutdown(worker)

    # -- main thread: polling ---------------------------------------------------------------------

    def _poll_loop(self) -> None:
        high = self.cfg.queued_batches
        next_lag = time.monotonic() + LAG_INTERVAL_S
        full_since: float | None = None
        eos = self.cfg.exactly_once
        while not self._stop.is_set() and self.fatal is None:
            if eos:  # the worker never polls for itself here
                with self._calling_consumer():
                    self._refresh_group_metadata()
                    if self._rewind:
                        self._rewind_to_committed()
            if self._to_store and self._consumer_lock.acquire(blocking=False):
                try:  # else the worker polls, and stores them first
                    self._store_completed()
                finally:
                    self._consumer_lock.release()
            if time.monotonic() >= next_lag:
                with self._calling_consumer():
                    self._update_lag()
                next_lag = time.monotonic() + LAG_INTERVAL_S
            if self._unacked_since is not None:
                self._check_unacknowledged()
            queued = len(self._queue)
            if high:
                full = queued >= high
                room = queued <= min(1, high - 1)  # paused partitions resume once the queue drained
            else:  # the next batch is polled only once the worker waits for it, or polls for itself
                full = queued > 0 or not (self._worker_waiting or self._worker_polling)
                room = not full
            if full and not self._paused:
                now = time.monotonic()
                full_since = full_since or now
                if now - full_since < PAUSE_AFTER_S:
                    self._space.wait(0.05)
                    self._space.clear()
                    continue
                with self._calling_consumer():
                    self._set_paused(True)
            elif not full:
                full_since = None
            if self._paused and (room or self._repause):
                with self._calling_consumer():
                    self._set_paused(not room)
            if self._worker_polling:
                self._space.wait(0.05)
                self._space.clear()
                continue
            with self._calling_consumer():  # queued before the worker may poll: it takes them first
                batch = self._poll_batch()
                if batch:
                    self._enqueue(batch)

    @contextlib.contextmanager
    def _calling_consumer(self) -> Iterator[None]:
        """Main thread: hold the consumer, which the worker leaves after its current poll."""
        self._consumer_wanted = True
        try:
            with self._consumer_lock:
                yield
        finally:
            self._consumer_wanted = False

    def _poll_batch(self) -> list[Any]:
        """One blocking poll, then what else is ready, up to ``poll_batch_size``. Holding the consumer."""
        watch, consumer, n = self._poll_watch, self.consumer, self.cfg.poll_batch_size
        watch.polling()
        msg = consumer.poll(ACK_WAIT_S if self._awaiting_acks or self._to_store else POLL_TIMEOUT_S)
        watch.polled()
        if msg is None:
            return []
        return [msg, *consumer.consume(n - 1, 0)] if n > 1 else [msg]

    def _refresh_group_metadata(self) -> None:
        if self.cfg.exactly_once and not self._closing:
            self._group_metadata = self.consumer.consumer_group_metadata()

    def _enqueue(self, batch: list[Any]) -> None:
        good = self._accept(batch)
        if good:
            with self._cond:
                self._queue.append((self._epoch, good))
                self._cond.notify()

    def _accept(self, batch: list[Any]) -> list[Any]:
        """A polled batch's messages, its errors logged (a fatal one stops the consumer) and the rest counted."""
        good = [msg for msg in batch if msg.error() is None]
        if len(good) < len(batch):
            for msg in batch:
                err = msg.error()
                if err is not None and err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error", extra={"error": err.str(), "topic": msg.topic()})
                    if err.fatal():
                        self.fatal = KafkaException(err)
        consumed = self._consumed
        if len(consumed) == 1:
            if good:
                next(iter(consumed.values())).inc(len(good))
        else:
            counts: dict[str, int] = {}
            for msg in good:
                topic = msg.topic()
                counts[topic] = counts.get(topic, 0) + 1
            for topic, count in counts.items():
                consumed[topic].inc(count)
        if good:
            self._broker_ok = True
        return good

    def _store_completed(self) -> None:
        """Store the offsets the worker completed. Holding the consumer."""
        with self._store_lock:
            offsets, self._to_store = self._to_store, []
        latest: dict[TP, TopicPartition] = {}
        for tp in offsets:
            latest[(tp.topic, tp.partition)] = tp
        _delivery.store(self.consumer, list(latest.values()))
        self._stored.update((key, tp.offset) for key, tp in latest.items() if key in self._assigned)

    def _set_paused(self, paused: bool) -> None:
        partitions = self.consumer.assignment()
        try:
            if paused:
                self.consumer.pause(partitions)
            else:
                self.consumer.resume(partitions)
        except KafkaException as exc:
            log.warning("pause/resume failed", extra={"error": str(exc)})
            return
        self._paused, self._repause = paused, False

    def _resume_leaving(self, partitions: list[TopicPartition]) -> None:
        """Resume paused partitions as they go: librdkafka keeps a partition paused when it is assigned
        again, and the polling loop, which resumes what is assigned once the queue has room, could have
        resumed while the partition was away: it would never be read again."""
        try:
            self.consumer.resume(partitions)
        except KafkaException as exc:
            log.warning("resuming revoked partitions failed", extra={"error": str(exc)})

    def _update_lag(self) -> None:
        tps = self.consumer.assignment()
        if not tps:
            return
        try:
            committed = self.consumer.committed(tps, timeout=2)
            self._broker_ok = True
        except KafkaException:
            return
        for tp in committed:
            if tp.error is not None:
                continue
            try:
                _low, high = self.consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            if high is None or high < 0:
                continue
            lag = high - tp.offset if tp.offset >= 0 else high
            self.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(lag, 0))

    def _check_unacknowledged(self) -> None:
        """Outputs long unacknowledged: name, once, each output topic that does not exist (deleted while
        the consumer runs), rather than say nothing until ``message.timeout.ms`` stops the process."""
        since, now = self._unacked_since, time.monotonic()
        if since is None or now - since < self._unacked_check_s or now < self._next_topic_check:
            return
        self._next_topic_check = now + self._unacked_check_s
        try:
            metadata = self.producer.list_topics(timeout=2)
        except KafkaException:
            return  # the broker is away: its client errors say so
        missing = set(missing_topics(metadata, self.app.output_topics(self.settings)))
        for topic in sorted(missing - self._missing_outputs):
            log.warning(
                f"outputs to topic {topic!r} are not acknowledged: the topic does not exist; create it, "
                "or the consumer stops without committing them once message.timeout.ms has passed",
                extra={
                    "topic": topic,
                    "waiting_s": round(now - since, 1),
                    "message_timeout_ms": self._message_timeout_ms,
                },
            )
        self._missing_outputs = missing

    def _on_kafka_error(self, err: KafkaError) -> None:
        if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self._broker_ok = False
        log.warning("kafka client error", extra={"error": err.str()})

    def _rewind_to_committed(self) -> None:
        """After an aborted transaction: read every assigned partition again from its committed offset.

        Messages polled before this (queued, or fetched by librdkafka) belong to an older epoch and are
        skipped; until it is done the worker skips every message.
        """
        self._take_lock()
        try:
            assigned = self.consumer.assignment()
            try:
                committed = committed_offsets(self.consumer, assigned, 10) if assigned else []
                for tp in committed:
                    if tp.offset < 0:
                        earliest = self.cfg.auto_offset_reset == "earliest"
                        tp.offset = OFFSET_BEGINNING if earliest else OFFSET_END
                    self.consumer.seek(tp)
            except KafkaException as exc:
                log.warning(
                    "seeking back to the committed offsets failed; retrying", extra={"error": str(exc)}
                )
                return
            for p in assigned:
                self._revoked_at[(p.topic, p.partition)] = self._epoch
            self._epoch += 1
            self._rewind = False
            self._interrupt.raised = True
        finally:
            self._lock.release()
        log.info(
            "resuming from the committed offsets",
            extra={"partitions": sorted(f"{p.topic}[{p.partition}]" for p in assigned)},
        )

    # -- the polling thread: rebalances -----------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._refresh_group_metadata()  # a new generation, even when nothing new is assigned
        self._assigned |= {(p.topic, p.partition) for p in partitions}
        self._repause = self._paused
        self.metrics.rebalances.labels("assign").inc()
        self.metrics.assigned.set(len(self._assigned))
        log.info(
            "partitions assigned", extra={"partitions": [f"{p.topic}[{p.partition}]" for p in partitions]}
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._release(partitions, commit=True)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._release(partitions, commit=False)

    def _release(self, partitions: list[TopicPartition], *, commit: bool) -> None:
        """Commit what is done on the partitions going away, then forget them (and their queued messages).

        Exactly-once: the open transaction is committed here, in the revocation callback, where the
        group metadata is still that of the generation the partitions were processed in; partitions
        lost without a revocation abort it.

        The callback may run inside a non-blocking ``consume``, where its time counts against
        ``max.poll.interval.ms`` (and, classic protocol, against the rebalance): waiting for a busy
        handler takes at most half of the interval since the last poll, making outputs durable at most
        until 80% of it, so the member never loses the group over a slow handler or a slow sink.
        """
        tps = {(p.topic, p.partition) for p in partitions}
        if not tps:
            return
        for tp in tps:
            self._revoked_at[tp] = self._epoch
        self._epoch += 1
        self._interrupt.raised = True
        self._assigned -= tps
        for tp in tps:
            self._stored.pop(tp, None)
        self.metrics.assigned.set(len(self._assigned))
        self.metrics.rebalances.labels("revoke" if commit else "lost").inc()
        self._refresh_group_metadata()
        if self._paused:
            self._resume_leaving(partitions)
        bound = min(10.0, self.cfg.drain_timeout_s)
        wait = 0.5 if self._closing else min(self._poll_watch.budget(0.5), self.cfg.drain_timeout_s)
        if not self._take_lock(timeout=wait):
            log.warning(
                "a handler is still busy; partitions go with their last stored offsets",
                extra={"partitions": sorted(f"{t}[{p}]" for t, p in tps)},
            )
            if self.cfg.exactly_once:
                # The open transaction may hold work of these partitions, which their next owner
                # does again: it must never commit.
                self._abort_pending = True
            elif commit:
                self._store_completed()
                _delivery.commit_stored(self.consumer)
            return
        try:
            if self._txns is not None and not commit:
                self._txns.abort()
                self._resume_from_committed()
            elif commit and self.fatal is None:
                self._make_durable(bound if self._closing else min(bound, self._poll_watch.budget(0.8)))
                if not self.cfg.exactly_once:
                    self._store_completed()
                    _delivery.commit_stored(self.consumer)
            self.pipeline.drop(tps)
        except Exception as exc:
            log.exception("committing revoked partitions failed", extra={"error": str(exc)})
        finally:
            self._lock.release()
        log.info(
            "partitions revoked" if commit else "partitions lost",
            extra={"partitions": sorted(f"{t}[{p}]" for t, p in tps)},
        )

    # -- worker thread ----------------------------------------------------------------------------

    def _work(self) -> None:
        try:
            self._work_loop()
        except Abandoned:
            log.info("stopped while a message waited for a retry; it stays uncommitted")
        except DeliveryError as exc:
            self.fatal, self._fatal_logged = exc, True
            log.error(
                "stopping: an output was not acknowledged; its offset is not committed",
                extra={"error": str(exc)},
            )
        except BaseException as exc:
            self.fatal, self._fatal_logged = exc, True
            log.exception(
                "stopping: unexpected error in the consumer", extra={"error": f"{type(exc).__name__}: {exc}"}
            )
        finally:
            self._worker_done.set()
            self.request_stop()

    def _next_batch(self) -> tuple[int, list[Any]] | None:
        if self._worker_polls and not self._queue and self._may_poll_here():
            return self._poll_here()
        with self._cond:
            if not self._queue and not self._stop.is_set():
                self._worker_waiting = True
                self._space.set()
                self._cond.wait(ACK_WAIT_S if self._awaiting_acks else POLL_TIMEOUT_S)
                self._worker_waiting = False
            if not self._queue:
                return None
            item = self._queue.popleft()
        if self.cfg.queued_batches:
            # Room for a batch polled ahead. Without queued batches the main thread polls only once the
            # worker waits: woken now, it would only take the interpreter lock from the worker and wait again.
            self._space.set()
        return item

    def _may_poll_here(self) -> bool:
        """Worker: whether it may poll for itself now; if so, it holds the consumer."""
        if self._paused or self._consumer_wanted or self._stop.is_set():
            return False  # paused partitions resume on the main thread, which then polls
        if not self._consumer_lock.acquire(blocking=False):
            return False
        if self._queue:  # polled by the main thread meanwhile: older than anything polled now
            self._consumer_lock.release()
            return False
        return True

    def _poll_here(self) -> tuple[int, list[Any]] | None:
        """Worker, holding the consumer: store what is complete, poll, release the consumer. Rebalance
        callbacks run here, on this thread, outside the pipeline lock."""
        self._worker_polling = True
        try:
            if self._to_store:
                self._store_completed()
            batch = self._poll_batch()
        finally:
            self._worker_polling = False
            self._consumer_lock.release()
        good = self._accept(batch) if batch else []
        return (self._epoch, good) if good else None

    def _take_lock(self, timeout: float = -1) -> bool:
        """Take the pipeline lock (a rebalance, a rewind); the worker yields it after its current message."""
        self._lock_wanted = True
        self._interrupt.raised = True
        try:
            return self._lock.acquire(timeout=timeout)
        finally:
            self._lock_wanted = False

    def _yield_lock(self) -> None:
        """Worker, holding the lock: let the thread that asked for it take it first."""
        self._lock.release()
        while self._lock_wanted:
            time.sleep(0.0005)
        self._lock.acquire()

    def _work_loop(self) -> None:
        lock, pipeline, txns, revoked_at = self._lock, self.pipeline, self._txns, self._revoked_at
        interrupt = self._interrupt
        stopping = self._stop.is_set
        current = log_context.current
        while True:
            item = self._next_batch()
            if item is None:
                if stopping():
                    return
                with lock:
                    self._in_transaction(self._idle)
                continue
            epoch, batch = item
            with lock:
                i, size = 0, len(batch)
                while i < size:
                    if (self._stopping and self._past_drain()) or self.fatal is not None:
                        return
                    if self._lock_wanted:
                        self._yield_lock()
                    if txns is None and self._may_feed_run(epoch):
                        # Up to the next store: fed in one loop, which ends early when interrupted.
                        fed = pipeline.feed_run(
                            batch, i, min(size, i - i % STORE_EVERY + STORE_EVERY), interrupt
                        )
                        if fed > i and not fed % STORE_EVERY:
                            self._store_done()
                        i = fed
                        continue
                    msg = batch[i]
                    i += 1
                    # Polled before its partition was revoked (or rewound): not this process's to handle.
                    if self._rewind or (
                        epoch < self._epoch and revoked_at.get((msg.topic(), msg.partition()), -1) >= epoch
                    ):
                        continue
                    current.msg = msg
                    if txns is None:
                        pipeline.feed(msg)
                        if not i % STORE_EVERY:
                            self._store_done()
                        continue
                    if self._handled_already(epoch, msg):
                        continue
                    self._in_transaction(pipeline.feed, msg)
                    if txns.aged():
                        self._commit_transaction()  # well before the broker's transaction timeout
                set_current(None)
                if self._lock_wanted:
                    self._yield_lock()
                self._in_transaction(self._end_batch)

    def _may_feed_run(self, epoch: int) -> bool:
        """At-least-once: whether the next messages of a batch polled in ``epoch`` may be fed as a run,
        no message of it to be skipped and nothing asking the worker to stop or to yield the lock.
        Lowers the interrupt first: a change made after it raises it again. Under the lock."""
        self._interrupt.raised = False
        return not (
            self._lock_wanted
            or self._stopping
            or self.fatal is not None
            or self._rewind
            or epoch != self._epoch
        )

    def _handled_already(self, epoch: int, msg: Any) -> bool:
        """Exactly-once: whether ``msg`` comes before a message of its partition fed in the same epoch.

        Only a rewind of ours (which starts a new epoch) may read a partition again. When the consumer
        itself goes back (librdkafka resetting a position after a leader change, for one), the messages
        it reads again were handled in a transaction that is committed or still open: handling them
        again would write their outputs twice.
        """
        tp = (msg.topic(), msg.partition())
        offset = msg.offset()
        last = self._next_offsets.get(tp)
        if last is not None and last[0] == epoch and offset < last[1]:
            if tp not in self._went_back:
                self._went_back.add(tp)
                log.warning(
                    "the consumer went back on a partition without a rewind; the messages handled "
                    "already are skipped",
                    extra={"partition": f"{tp[0]}[{tp[1]}]", "offset": offset, "next_offset": last[1]},
                )
            return True
        self._went_back.discard(tp)
        self._next_offsets[tp] = (epoch, offset + 1)
        return False

    def _idle(self) -> None:
        self.pipeline.tick()
        self._after_batch()

    def _end_batch(self) -> None:
        self.pipeline.end_batch()
        self.pipeline.tick()
        self._after_batch()

    def _in_transaction(self, step: Callable[..., None], *args: Any) -> None:
        """Run a step that may produce. Exactly-once: a produce the transaction refuses (the broker
        aborted it, this producer was fenced) aborts it and resumes from the committed offsets. Under the lock."""
        if self._txns is None:
            step(*args)
            return
        try:
            step(*args)
        except KafkaException as exc:
            if not self._txns.refused(exc):
                raise
            self._resume_from_committed()

    def _past_drain(self) -> bool:
        if self.fatal is not None:
            return True
        return self._draining_until is not None and time.monotonic() >= self._draining_until

    def _after_batch(self) -> None:
        """Store completed offsets (at-least-once) or commit the transaction (exactly-once). Under the lock."""
        if self.cfg.exactly_once:
            self._commit_transaction()
            return
        self._store_done()
        self._awaiting_acks = self.pipeline.inflight()

    def _store_done(self) -> None:
        """At-least-once: hand what is complete to the thread that polls next. Under the lock."""
        self.producer.poll(0)
        done = self.pipeline.completed()
        self._unacked_since = self.pipeline.waiting_since()
        if done:
            with self._store_lock:
                self._to_store.extend(done)
            # No thread is woken for them: the worker stores them before it next polls, the main thread
            # when it next looks (at the latest once its wait for room times out). Each wake-up in the
            # middle of a batch takes the interpreter lock from the worker twice.

    def _commit_transaction(self) -> None:
        """Commit the open transaction with the offsets processed in it; when the broker refuses it, it is
        aborted and every assigned partition is read again from its committed offset. Under the lock."""
        assert self._txns is not None
        # Taken before the check: a revocation that sets ``_abort_pending`` after it leaves this
        # metadata at the generation that still owned the partitions, which the broker then refuses.
        group_metadata = self._group_metadata
        if self._abort_pending:
            self._abort_pending = False
            self._txns.abort()
            self._resume_from_committed()
        elif not self._txns.commit(self.pipeline.processed_positions(), group_metadata):
            self._resume_from_committed()

    def _resume_from_committed(self) -> None:
        """Forget the work of an aborted transaction; the main thread seeks back. Under the lock."""
        assert self._txns is not None
        if self._txns.aborted_in_a_row >= MAX_ABORTS_IN_A_ROW:
            raise DeliveryError(
                f"{self._txns.aborted_in_a_row} transactions in a row were aborted; "
                "the outputs cannot be committed"
            )
        self.transport.producer = self._txns.producer  # a new one if the old one was fenced
        self.pipeline.reset()
        self._rewind = True
        self._interrupt.raised = True

    def _make_durable(self, timeout: float) -> None:
        """Flush sinks and hand what is done to the polling thread, which stores it (at-least-once), or commit
        the transaction (exactly-once). Under the lock."""
        if self.cfg.exactly_once:
            self._commit_transaction()
            return
        deadline = time.monotonic() + timeout
        self.pipeline.flush_sinks(timeout)
        self.producer.flush(max(0.0, deadline - time.monotonic()))
        with self._store_lock:
            self._to_store.extend(self.pipeline.completed())

    # -- shutdown ---------------------------------------------------------------------------------

    def _close_consumer(self, timeout: float) -> None:
        """Leave the group, but never wait on it past ``timeout``: librdkafka's close can block until the
        session times out when a cooperative rebalance is half done. Offsets are committed before this."""

        def close() -> None:
            try:
                self.consumer.close()
            except KafkaException as exc:
                log.warning("closing the consumer failed", extra={"error": str(exc)})

        closer = threading.Thread(target=close, name="thimble-consumer-close", daemon=True)
        closer.start()
        closer.join(timeout)
        if closer.is_alive():
            log.warning(
                "the group did not acknowledge leaving in time; the broker drops this member at session timeout",
                extra={"close_timeout_s": round(timeout, 1)},
            )

    def _poll_until(self, done: threading.Event, deadline: float) -> None:
        """Poll (paused partitions return nothing) until ``done`` or ``deadline``: the group session and
        ``max.poll.interval.ms`` stay satisfied while another thread finishes work."""
        while not done.is_set() and time.monotonic() < deadline:
            self._poll_watch.polling()
            self.consumer.poll(0.05)
            self._poll_watch.polled()

    def _commit_polling(self, deadline: float) -> None:
        """Commit the stored offsets and poll until the commit is back, or ``deadline`` (shutdown).

        A synchronous commit would wait for the group's coordinator without polling: one that moves
        with a broker can take longer than ``max.poll.interval.ms``, and the group would drop the member
        and refuse its commit, so everything since the last auto-commit is delivered again.
        """
        offsets = [
            TopicPartition(topic, partition, offset) for (topic, partition), offset in self._stored.items()
        ]
        if not offsets:
            return
        returned = self._commits.expect(offsets)
        try:
            self.consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:
            log.warning("offset commit failed", extra={"error": str(exc)})
            return
        self._poll_until(returned, deadline)
        if not returned.is_set():
            log.warning(
                "the offset commit did not come back in time; the group may deliver its messages again",
                extra={"partitions": sorted(f"{tp.topic}[{tp.partition}]" for tp in offsets)},
            )

    def _finish_pipeline(self, deadline: float, finished: threading.Event) -> None:
        """Run the open batches and make every output durable (shutdown, after the worker stopped). The
        offsets are stored by the main thread afterwards: a consumer call from here would wait for its
        polling loop to end."""
        try:
            with self._lock:
                self.pipeline.flush_batches()
                self._make_durable(timeout=max(0.5, deadline - time.monotonic()))
        except DeliveryError as exc:
            self.fatal, self._fatal_logged = exc, True
            log.error("stopping: an output was not acknowledged", extra={"error": str(exc)})
        except BaseException as exc:
            self.fatal, self._fatal_logged = exc, True
            log.exception("stopping: finishing the open batches failed", extra={"error": str(exc)})
        finally:
            finished.set()

    def _shutdown(self, worker: threading.Thread) -> int:
        self._ready = False
        self.request_stop()
        # Held from here on: once stopping, the worker never polls for itself.
        self._consumer_wanted = True
        self._consumer_lock.acquire()
        deadline = self._draining_until or time.monotonic()
        if not self._paused:
            self._set_paused(True)
        self._poll_until(self._worker_done, deadline)
        pipeline_idle = self._worker_done.is_set()
        if pipeline_idle and self.fatal is None:
            # Open batches run their handlers now, which may take long: in a thread of their own, while
            # this one goes on polling, so the group never drops the member for not polling.
            finished = threading.Event()
            finisher = threading.Thread(
                target=self._finish_pipeline,
                args=(deadline, finished),
                name="thimble-consumer-finish",
                daemon=True,
            )
            finisher.start()
            self._poll_until(finished, max(deadline, time.monotonic() + CLOSE_BOUND_S))
            pipeline_idle = finished.is_set()
        if not pipeline_idle:
            log.warning(
                "drain bound reached with the worker still busy (in a handler or a sink write); "
                "what it holds stays uncommitted and is delivered again",
                extra={"drain_timeout_s": self.cfg.drain_timeout_s},
            )
        if not self.cfg.exactly_once:
            self._store_completed()
            self._commit_polling(max(deadline, time.monotonic() + CLOSE_BOUND_S))
        self._closing = True
        self._close_consumer(timeout=max(CLOSE_BOUND_S, deadline - time.monotonic()))
        self.producer.flush(max(0.5, deadline - time.monotonic()))
        if pipeline_idle:
            self.pipeline.close()
        if self.fatal is not None:
            # One error line per failure: where it was caught already logged it with its detail.
            (log.info if self._fatal_logged else log.error)(
                "stopped after a failure", extra={"error": f"{type(self.fatal).__name__}: {self.fatal}"}
            )
            return 1
        log.info("stopped cleanly")
        return 0
