"""The whole flow on the running local stack: events -> consumers -> warehouse -> model -> predictions.

Each stage is a method of :class:`Flow` and records what it did in a :class:`FlowReport`; the flow starts
no service of the stack (``./dev stack up`` does) but checks each one first, and waits on conditions
(consumer group offsets, readiness endpoints), never on fixed sleeps.
"""

from __future__ import annotations

import contextlib
import faulthandler
import functools
import os
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from integration.flow import _services as svc
from integration.flow.errors import FlowError, StageError
from integration.flow.events import client_features, names
from integration.flow.generator import GeneratorConfig, ProduceReport, ensure_topic, generate, produce
from integration.flow.train import MODEL_NAME, TrainResult, train
from thimble.common.errors import ThimbleError
from thimble.consumer import ConsumerSettings, group_lag
from thimble.etl import EtlSettings
from thimble.modelops import ModelOpsSettings, Registry

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from thimble.etl import RunResult, TableConfig
    from thimble.modelops.batch import BatchResult
    from thimble.modelops.skew import SkewReport

TABLES_DIR = Path(__file__).resolve().parent / "tables"
TABLES = ("client_events", "client_features", "ab_assignments", "client_features_current")
CURRENT_TABLE = "client_features_current"  # one row per client: what batch scoring scores
PREDICTIONS_TABLE = "client_risk_scores"
PREDICTION_LOG_TABLE = "return_risk_prediction_log"
CONSUMERS = {"features": "integration.flow.features:app", "ab-test": "integration.flow.ab_test:app"}
APP_NAMES = {"features": "client-features", "ab-test": "ab-assignment"}
FIRST_DAY = date(2026, 1, 1)
STALL_S = 300.0  # a stage still running after this long says so, and writes every thread's stack


def table_config(table: str) -> TableConfig:
    """The flow table's YAML config (``${THIMBLE_FLOW_*}`` variables in it are filled from the environment)."""
    from thimble.etl import load_table_config

    return load_table_config(TABLES_DIR / f"{table}.yaml")


def load_order(configs: dict[str, TableConfig]) -> list[list[str]]:
    """The tables in waves: a table read from another of ``configs`` comes in a wave after it."""
    waves: list[list[str]] = []
    loaded: set[str] = set()
    while len(loaded) < len(configs):
        wave = [
            table
            for table, config in configs.items()
            if table not in loaded and not (_reads_from(config) & (configs.keys() - loaded))
        ]
        if not wave:
            raise FlowError(
                f"tables that read each other in a cycle: {', '.join(sorted(configs.keys() - loaded))}"
            )
        waves.append(wave)
        loaded.update(wave)
    return waves


def _reads_from(config: TableConfig) -> set[str]:
    return {config.source.table} if config.source.type == "table" else set()


def _plural(word: str, items: list[str]) -> str:
    return word if len(items) == 1 else f"{word}s"


class FlowSettings(EtlSettings, ModelOpsSettings, ConsumerSettings):
    """Every section the flow's stages read: Thimble's shared ones, ``etl``, ``modelops`` and ``consumer``."""


def consumed(settings: FlowSettings, app: str) -> tuple[int, int]:
    """(committed offsets, lag) of an app's group on the events topic, summed over its partitions."""
    partitions = group_lag(settings, group_of(app), [names.events_topic])
    return sum(p.committed or 0 for p in partitions), sum(p.lag for p in partitions)


@dataclass
class FlowConfig:
    """How big and how fast. ``day`` defaults to the day after the newest landed one."""

    count: int = 5_000
    clients: int = 500
    rate: float | None = 2_500.0
    day: date | None = None
    seed: int = 7
    bad_ratio: float = 0.005
    ab_split: str = "control=50,treatment=50"
    partitions: int = 3
    timeout_s: float = 300.0
    sample_clients: int = 5


@dataclass
class ConsumerCounts:
    """What one consumer app did in this run (from its topics and its /metrics)."""

    app: str
    group: str
    consumed: int = 0
    outputs: int = 0
    dead_letters: int = 0
    processed_metric: float = 0.0
    dead_lettered_metric: float = 0.0
    exit_code: int | None = None


@dataclass
class FlowReport:
    """Everything the summary shows."""

    day: date
    stack: dict[str, str] = field(default_factory=dict)
    produced: ProduceReport | None = None
    consumers: dict[str, ConsumerCounts] = field(default_factory=dict)
    tables: dict[str, RunResult] = field(default_factory=dict)
    skew: SkewReport | None = None
    model: TrainResult | None = None
    server_url: str = ""
    served: list[dict[str, Any]] = field(default_factory=list)
    served_request_ids: list[str] = field(default_factory=list)
    batch: BatchResult | None = None
    batch_sample: dict[str, dict[str, Any]] = field(default_factory=dict)
    first_prediction_at: float | None = None
    stages: list[tuple[str, float]] = field(default_factory=list)
    logs: Path | None = None

    @property
    def first_event_to_prediction_s(self) -> float | None:
        if self.produced is None or self.produced.first_acked_at is None or self.first_prediction_at is None:
            return None
        return self.first_prediction_at - self.produced.first_acked_at


def next_day(settings: FlowSettings) -> date:
    """The day after the newest one landed so far (so each run appends a day), else :data:`FIRST_DAY`."""
    root = Path(settings.warehouse.landing) / names.features_dataset
    days = []
    for folder in root.glob("date=*"):
        with contextlib.suppress(ValueError):
            days.append(date.fromisoformat(folder.name.removeprefix("date=")))
    return max(days) + timedelta(days=1) if days else FIRST_DAY


@contextlib.contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """Point file descriptor 2 at ``path`` while a child process (the JVM) is started: it inherits the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(target, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(target)
        os.close(saved)


def _cli(name: str) -> str:
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else name


def group_of(app: str) -> str:
    """The consumer group of an app: its name, qualified by the events topic when that is not the default."""
    base = APP_NAMES[app]
    return base if names.events_topic == "client-events" else f"{base}.{names.events_topic}"


class Flow:
    """Runs the stages in order; ``spark`` and ``registry`` may be given (tests share a session)."""

    def __init__(
        self,
        config: FlowConfig,
        settings: FlowSettings,
        console: Console | None = None,
        spark: SparkSession | None = None,
        registry: Registry | None = None,
        logs: Path | None = None,
    ) -> None:
        self.config = config
        self.settings = settings
        self.console = console or Console(highlight=False)
        self._spark = spark
        self.registry = registry or Registry.from_config(settings.modelops)
        self.kafka = settings.kafka.client_config()
        self.report = FlowReport(config.day or next_day(settings))
        run = Path(os.environ.get("THIMBLE_RUN_DIR") or svc.REPO / ".run")
        self.report.logs = logs or run / "flow" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        self.processes: list[svc.Process] = []
        self.server: svc.Process | None = None
        self._logged_before = 0

    # -- plumbing -----------------------------------------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        """The settings every subprocess gets, so that they all see the same stack and warehouse."""
        s = self.settings
        return {
            "THIMBLE_KAFKA__BOOTSTRAP_SERVERS": s.kafka.bootstrap_servers,
            "THIMBLE_ONLINE_STORE__URL": s.online_store.url,
            "THIMBLE_ONLINE_STORE__KEY_PREFIX": s.online_store.key_prefix,
            "THIMBLE_WAREHOUSE__LANDING": s.warehouse.landing,
            "THIMBLE_WAREHOUSE__LOCATION": s.warehouse.location,
            "THIMBLE_WAREHOUSE__DATABASE": s.warehouse.database,
            "THIMBLE_MODELOPS__REGISTRY": self.registry.url,
            "THIMBLE_LOGGING__FORMAT": "json",
            "THIMBLE_CONSUMER__LANDING_FLUSH_INTERVAL_S": "1",
            "THIMBLE_FLOW_EVENTS_TOPIC": names.events_topic,
            "THIMBLE_FLOW_FEATURES_TOPIC": names.features_topic,
            "THIMBLE_FLOW_ASSIGNMENTS_TOPIC": names.assignments_topic,
            "THIMBLE_FLOW_PREDICTIONS_TOPIC": names.predictions_topic,
            "THIMBLE_FLOW_AB_SPLIT": self.config.ab_split,
            "PYTHONPATH": str(svc.REPO),
        }

    @property
    def spark(self) -> SparkSession:
        """The flow's Spark session; the JVM it starts writes its own log to ``spark.log``, not the terminal."""
        if self._spark is None:
            from thimble.common.spark import build_spark_session

            assert self.report.logs is not None
            with _stderr_to(self.report.logs / "spark.log"):
                self._spark = build_spark_session(self.settings, app_name="thimble-flow")
        return self._spark

    @contextlib.contextmanager
    def stage(self, name: str, done: str, spinner: bool = True) -> Iterator[None]:
        """Time a stage, show a spinner while it runs and ``done`` when it ends; name it in any error."""
        started = time.monotonic()
        status = self.console.status(f"[bold]{name}[/]…") if spinner else contextlib.nullcontext()
        watchdog = threading.Timer(STALL_S, self._stalled, (name, started))
        watchdog.daemon = True
        watchdog.start()
        try:
            with status:
                yield
        except ThimbleError as exc:
            if isinstance(exc, StageError):
                raise
            raise StageError(name, str(exc)) from None
        finally:
            watchdog.cancel()
        seconds = time.monotonic() - started
        self.report.stages.append((name, seconds))
        self.console.print(f"[green]✓[/] {done} [dim]({seconds:.1f} s)[/]")

    def _stalled(self, name: str, started: float) -> None:
        """A stage has run for :data:`STALL_S`: write where every thread waits, and say where it is."""
        assert self.report.logs is not None
        self.report.logs.mkdir(parents=True, exist_ok=True)
        path = self.report.logs / f"stalled-{name.replace(' ', '-')}.txt"
        with path.open("a") as out:
            faulthandler.dump_traceback(out, all_threads=True)
        self.console.print(
            f"[yellow]![/] {name} has run for {time.monotonic() - started:.0f} s; where each thread waits: {path}"
        )

    def _start(self, name: str, argv: list[str]) -> svc.Process:
        assert self.report.logs is not None
        process = svc.Process(name, argv, self.report.logs / f"{name}.log", self.env)
        self.processes.append(process)
        return process

    def close(self) -> None:
        """Stop every process the flow started."""
        for process in self.processes:
            process.stop()

    # -- the stages ---------------------------------------------------------------------------------

    def run(self, keep_serving: bool = False) -> FlowReport:
        """Every stage, in order. Processes are stopped however it ends, except the model server when
        ``keep_serving`` (then :meth:`close` stops it)."""
        try:
            self.check_stack()
            consumers = self.start_consumers()
            self.produce_events()
            self.wait_for_consumers(consumers)
            self.load_warehouse()
            self.check_skew()
            self.train_model()
            server = self.serve_model()
            self.score_batch()
            self.load_prediction_log()
            if not keep_serving:
                server.stop()
        except BaseException:
            self.close()
            raise
        if not keep_serving:
            self.close()
        return self.report

    def serve_dashboard(self) -> str:
        """Start ``thimble-modelops dashboard`` on a free port; return its URL."""
        port = svc.free_port()
        url = f"http://127.0.0.1:{port}"
        process = self._start("dashboard", [_cli("thimble-modelops"), "dashboard", "--port", str(port)])
        svc.wait_for(lambda: svc.http_ok(url), 60, "the dashboard", process.check_alive)
        return url

    def check_stack(self) -> None:
        with self.stage("stack", "Kafka, Redis and Spark are up"):
            self.report.stack = svc.check_stack(self.settings)

    def start_consumers(self) -> dict[str, tuple[svc.Process, str]]:
        """Start both consumer apps (they create their output topics) and wait until they are ready."""
        started: dict[str, tuple[svc.Process, str]] = {}
        with self.stage("consumers", "features and A/B consumers started"):
            ensure_topic(self.kafka, names.events_topic, self.config.partitions)
            self._before = svc.end_offsets(self.kafka, self._counted_topics())
            for app, path in CONSUMERS.items():
                port = svc.free_port()
                argv = [
                    _cli("thimble-consumer"),
                    "run",
                    path,
                    "--create-topics",
                    "--group-id",
                    group_of(app),
                    "--metrics-port",
                    str(port),
                ]
                process = self._start(f"consumer-{app}", argv)
                started[app] = (process, f"http://127.0.0.1:{port}")
                self.report.consumers[app] = ConsumerCounts(app, group_of(app))
            for app, (process, url) in started.items():
                svc.wait_for(
                    functools.partial(svc.http_ok, f"{url}/readyz"),
                    60,
                    f"the {app} consumer to be ready",
                    process.check_alive,
                )
            self._committed_before = {app: consumed(self.settings, app)[0] for app in started}
        return started

    def _counted_topics(self) -> list[str]:
        return [
            names.events_topic,
            names.features_topic,
            names.features_dlq,
            names.assignments_topic,
            names.assignments_dlq,
        ]

    def produce_events(self) -> None:
        cfg = self.config
        generator = GeneratorConfig(
            cfg.count, cfg.clients, self.report.day, cfg.seed, bad_ratio=cfg.bad_ratio
        )
        with self.stage("events", f"{cfg.count:,} events of {self.report.day} produced", spinner=False):
            events = generate(generator)
            with self._progress() as progress:
                task = progress.add_task(f"producing to {names.events_topic}", total=len(events))
                self.report.produced = produce(
                    events,
                    names.events_topic,
                    self.kafka,
                    cfg.rate,
                    lambda n: progress.update(task, completed=n),
                )

    def _progress(self) -> Progress:
        return Progress(
            TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=self.console, transient=False,
        )  # fmt: skip

    def wait_for_consumers(self, consumers: dict[str, tuple[svc.Process, str]]) -> None:
        """Wait until both groups have no lag (every produced event committed), then stop them and count."""
        total = self.report.produced.produced if self.report.produced else 0
        with self.stage(
            "consumption", "every event consumed: features, A/B arms, dead letters", spinner=False
        ):
            with self._progress() as progress:
                tasks = {app: progress.add_task(f"{app} consumer", total=total) for app in consumers}
                deadline = time.monotonic() + self.config.timeout_s
                pending = set(consumers)
                while pending:
                    for app in sorted(pending):
                        process, _ = consumers[app]
                        process.check_alive()
                        done, lag = consumed(self.settings, app)
                        progress.update(tasks[app], completed=done - self._committed_before[app])
                        if lag == 0:
                            pending.discard(app)
                    if pending and time.monotonic() > deadline:
                        raise FlowError(
                            f"consumers {sorted(pending)} did not catch up within {self.config.timeout_s:.0f} s"
                        )
                    if pending:
                        time.sleep(0.2)
            metrics = {
                app: svc.scrape(
                    f"{url}/metrics",
                    [
                        "thimble_consumer_processed_messages_total",
                        "thimble_consumer_dead_lettered_messages_total",
                    ],
                )
                for app, (_, url) in consumers.items()
            }
            for process, _ in consumers.values():
                process.terminate()
            for app, (process, _) in consumers.items():
                counts = self.report.consumers[app]
                counts.exit_code = process.stop()
                counts.consumed = consumed(self.settings, app)[0] - self._committed_before[app]
                counts.processed_metric = metrics[app]["thimble_consumer_processed_messages_total"]
                counts.dead_lettered_metric = metrics[app]["thimble_consumer_dead_lettered_messages_total"]
            after = svc.end_offsets(self.kafka, self._counted_topics())
            delta = {topic: after[topic] - self._before.get(topic, 0) for topic in after}
            self.report.consumers["features"].outputs = delta[names.features_topic]
            self.report.consumers["features"].dead_letters = delta[names.features_dlq]
            self.report.consumers["ab-test"].outputs = delta[names.assignments_topic]
            self.report.consumers["ab-test"].dead_letters = delta[names.assignments_dlq]

    def _spark_where(self) -> str:
        remote = self.settings.spark.remote
        return f"Spark Connect {remote}" if remote else self.settings.spark.master

    def load_warehouse(self) -> None:
        """Load every table, those that do not read each other at once (each in a Spark session of its own)."""
        if self._spark is None:
            with self.stage("spark", f"Spark session started ({self._spark_where()}, Delta Lake)"):
                _ = self.spark
        configs = {table: table_config(table) for table in TABLES}
        for wave in load_order(configs):
            names = ", ".join(wave)
            with self.stage(f"tables {names}", f"warehouse {_plural('table', wave)} {names} loaded"):
                self.report.tables.update(self._load_together([configs[table] for table in wave]))

    def _load_together(self, configs: list[TableConfig]) -> dict[str, RunResult]:
        """Run the tables' loads at once; the first failure (in ``configs`` order) names its table."""
        from thimble.common.spark import side_session
        from thimble.etl import run_table

        def load(config: TableConfig) -> RunResult:
            with side_session(self.spark) as spark:
                return run_table(config, spark=spark, settings=self.settings)

        with ThreadPoolExecutor(len(configs), thread_name_prefix="load") as pool:
            futures = {config.table: pool.submit(load, config) for config in configs}
        results: dict[str, RunResult] = {}
        for table, future in futures.items():
            try:
                results[table] = future.result()
            except ThimbleError as exc:
                raise StageError(f"table {table}", str(exc)) from None
        return results

    def check_skew(self) -> None:
        """Compare the online store with the features journal's current rows (``thimble-modelops skew``)."""
        from thimble.modelops.skew import SkewTarget, skew

        target = SkewTarget.of(client_features, self.settings.warehouse.database)
        with self.stage("skew", "online store and warehouse journal compared"):
            self.report.skew = skew(target, 1000, spark=self.spark, settings=self.settings)

    def train_model(self) -> None:
        with self.stage("training", f"model {MODEL_NAME} trained, saved, aliased prod"):
            try:
                self.report.model = train(self.spark, self.settings, self.registry)
            except ValueError as exc:
                raise FlowError(str(exc)) from None

    def serve_model(self) -> svc.Process:
        """Serve ``return-risk@prod`` and ask it about a few clients by key only (online features fill the rest).

        The server logs every prediction to the predictions topic (see :meth:`load_prediction_log`).
        """
        port = svc.free_port()
        self.report.server_url = f"http://127.0.0.1:{port}"
        with self.stage("serving", "model served, clients scored online by id"):
            topic = names.predictions_topic
            ensure_topic(self.kafka, topic, self.config.partitions)
            self._logged_before = svc.end_offsets(self.kafka, [topic])[topic]
            argv = [
                _cli("thimble-modelops"),
                "serve",
                f"{MODEL_NAME}@prod",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--prediction-log-topic",
                topic,
            ]
            server = self.server = self._start("model-server", argv)
            svc.wait_for(
                lambda: svc.http_ok(f"{self.report.server_url}/readyz"),
                90,
                "the model server",
                server.check_alive,
            )
            clients = self.sample_clients()
            body = orjson.dumps([{"client_id": c} for c in clients])
            answer = self._predict(body)
            self.report.first_prediction_at = time.time()
            self.report.served_request_ids.append(answer["request_id"])
            self.report.served = [
                {"client_id": c, "model_version": answer["version"], **p}
                for c, p in zip(clients, answer["predictions"], strict=True)
            ]
        return server

    def _predict(self, body: bytes) -> dict[str, Any]:
        import urllib.error
        import urllib.request

        request = urllib.request.Request(
            f"{self.report.server_url}/v1/models/{MODEL_NAME}@prod/predict",
            body,
            {"content-type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                answer: dict[str, Any] = orjson.loads(response.read())
                return answer
        except urllib.error.HTTPError as exc:
            raise FlowError(
                f"the model server answered {exc.code}: {exc.read().decode(errors='replace')[:500]}"
            ) from None

    def sample_clients(self) -> list[str]:
        """The day's most active clients, and its least active ones."""
        from collections import Counter

        assert self.report.produced is not None
        produced = generate(
            GeneratorConfig(
                self.config.count, self.config.clients, self.report.day, self.config.seed, bad_ratio=0.0
            )
        )
        ranked = [c for c, _ in Counter(e.key for e in produced).most_common()]
        n = max(1, self.config.sample_clients)
        return list(dict.fromkeys(ranked[: (n + 1) // 2] + ranked[-(n // 2) :] if n > 1 else ranked[:1]))

    def score_batch(self) -> None:
        from pyspark.sql import functions as F

        from thimble.modelops.batch import run_batch

        with self.stage("batch scoring", f"every client scored on Spark into {PREDICTIONS_TABLE}"):
            result = run_batch(
                self.spark, f"{MODEL_NAME}@prod", CURRENT_TABLE, PREDICTIONS_TABLE,
                keep=["client_id", "event_time"], registry=self.registry, settings=self.settings,
            )  # fmt: skip
            self.report.batch = result
            clients = [row["client_id"] for row in self.report.served]
            rows = self.spark.table(result.output_table).filter(F.col("client_id").isin(clients)).collect()
            self.report.batch_sample = {r["client_id"]: r.asDict() for r in rows}

    def load_prediction_log(self) -> None:
        """Load what the server logged into the warehouse, with the table config generated from the model.

        The config is also written to the logs folder: ``thimble-etl run`` it to load later predictions.
        """
        import yaml

        from thimble.etl import parse_table_config, run_table
        from thimble.modelops import prediction_table_config

        topic = names.predictions_topic
        expected = self._logged_before + len(self.report.served_request_ids)
        with self.stage("prediction log", f"served predictions loaded into {PREDICTION_LOG_TABLE}"):
            svc.wait_for(
                lambda: svc.end_offsets(self.kafka, [topic])[topic] >= expected,
                30,
                f"the server's prediction records on {topic}",
                self.server.check_alive if self.server is not None else None,
            )
            loaded = self.registry.load(f"{MODEL_NAME}@prod")
            config = prediction_table_config(loaded, topic, PREDICTION_LOG_TABLE)
            assert self.report.logs is not None
            self.report.logs.mkdir(parents=True, exist_ok=True)
            (self.report.logs / f"{PREDICTION_LOG_TABLE}.yaml").write_text(
                yaml.safe_dump(config, sort_keys=False, width=1_000)
            )
            result = run_table(parse_table_config(config), spark=self.spark, settings=self.settings)
        self.report.tables[PREDICTION_LOG_TABLE] = result
