"""One scenario: a mode, a handler kind and a group protocol, attacked while it consumes, then audited."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson
import yaml

from integration._procs import alive, wait_for
from integration._settings import REPO_ROOT
from integration.guarantees import _audit
from integration.guarantees._cluster import Cluster
from integration.guarantees._members import Group, Member
from integration.guarantees._workload import COUNTS_SUFFIX, Record, Workload

Mode = Literal["at-least-once", "exactly-once"]
HandlerKind = Literal["message", "batch"]
Protocol = Literal["classic", "consumer"]
Attack = Literal["kill_worker", "kill_supervisor", "kill_leader", "join_leave"]

BASE_MESSAGES = 2000
BASE_LOAD_S = 14.0
PARTITIONS = 3
WORKERS = 2
SESSION_TIMEOUT_MS = 6000
SLOW_POLL_INTERVAL_MS = 6000
DRAIN_TIMEOUT_S = 10
# Workers of a killed supervisor drain, commit and exit: the drain bound, the group-close bound (5 s) and
# the workers' own 5 s margin, plus time for a worker that was still starting.
ORPHAN_GRACE_S = DRAIN_TIMEOUT_S + 5 + 5 + 15
JOINED_FOR_S = 6.0
KEY_PREFIX = "guarantees"
# librdkafka's own lines about brokers the suite killed on purpose would only be noise.
QUIET = logging.getLogger("integration.guarantees.librdkafka")
QUIET.setLevel(logging.CRITICAL)
_MODE_SHORT = {"at-least-once": "alo", "exactly-once": "eos"}
# What a worker's log says when it fails on its own (not because the suite killed it).
_KNOWN_FAILURES = {
    "Erroneous state": "Local: Erroneous state",
    "ILLEGAL_GENERATION": "ILLEGAL_GENERATION",
    "fenced": "producer fenced",
    "INVALID_PRODUCER_EPOCH": "INVALID_PRODUCER_EPOCH",
}


@dataclass(frozen=True)
class Scenario:
    mode: Mode
    handler: HandlerKind
    protocol: Protocol
    slow: bool = False
    attacks: tuple[Attack, ...] = (
        "kill_worker",
        "kill_supervisor",
        "kill_leader",
        "join_leave",
        "kill_worker",
    )

    @property
    def name(self) -> str:
        slow = "-slow" if self.slow else ""
        return f"{_MODE_SHORT[self.mode]}-{self.handler}-{self.protocol}{slow}"

    @property
    def exactly_once(self) -> bool:
        return self.mode == "exactly-once"


@dataclass
class Result:
    """What a scenario did and what the audit found."""

    scenario: Scenario
    sent: int = 0
    poison: int = 0
    lost: int = 0
    duplicated: int = 0
    resent: int = 0  # input records the suite's producer wrote twice (not the consumer's doing)
    dlq_exact: bool = False
    kills: Counter[str] = field(default_factory=Counter)
    orphans: int = 0
    crashes: Counter[str] = field(default_factory=Counter)
    completed: bool = False
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    def kills_text(self) -> str:
        short = {"worker": "w", "supervisor": "s", "broker": "b", "join_leave": "j"}
        return " ".join(f"{short.get(k, k)}{n}" for k, n in sorted(self.kills.items())) or "-"


class Run:
    """Everything one scenario needs: names, config, processes, the producer and the attack schedule."""

    def __init__(self, scenario: Scenario, cluster: Cluster, work_dir: Path, scale: int, seed: int) -> None:
        self.scenario = scenario
        self.cluster = cluster
        self.scale = scale
        self.rng = random.Random(seed)
        tag = uuid.uuid4().hex[:6]
        self.prefix = f"g-{scenario.name}-{tag}"
        self.source, self.output = f"{self.prefix}-in", f"{self.prefix}-out"
        self.dlq = f"{self.source}.dlq"
        # At-least-once, a stateful handler also counts a copy of the valid events per entity.
        self.counted = None if scenario.exactly_once else f"{self.prefix}-counted"
        self.feature_set, self.dataset = f"{self.prefix}-fs", f"{self.prefix.replace('-', '_')}_landed"
        self.dir = work_dir / self.prefix
        self.landing = self.dir / "landing"
        self.workload = Workload(BASE_MESSAGES * scale, seed, per_message=scenario.handler == "message")
        valid = sorted(self.workload.valid_ids)
        self.slow_ids = [valid[len(valid) // 3]] if scenario.slow else []
        self.slow_s = SLOW_POLL_INTERVAL_MS / 1000 + 2
        self.send_errors: list[str] = []
        self.result = Result(scenario, sent=len(self.workload.records), poison=len(self.workload.poison))
        self.group = Group(self._write_config(), self._env(), self.dir / "logs")
        self._leaving: list[tuple[float, Member]] = []

    # -- setup ------------------------------------------------------------------------------------

    def _write_config(self) -> Path:
        consumer: dict[str, Any] = {
            "group_id": self.prefix,
            "exactly_once": self.scenario.exactly_once,
            "group_protocol": self.scenario.protocol,
            "session_timeout_ms": SESSION_TIMEOUT_MS,
            "max_poll_interval_ms": SLOW_POLL_INTERVAL_MS if self.scenario.slow else 60_000,
            "drain_timeout_s": DRAIN_TIMEOUT_S,
            "topic_replication": 3,
            "landing_batch_rows": 500,
            "landing_flush_interval_s": 1.0,
        }
        config = {
            "kafka": {"bootstrap_servers": self.cluster.bootstrap},
            "online_store": {"url": self.cluster.redis_url, "key_prefix": KEY_PREFIX},
            "warehouse": {"landing": str(self.landing)},
            "metrics": {"port": 0},
            "logging": {"level": "INFO", "format": "json"},
            "consumer": consumer,
        }
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / "consumer.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def _env(self) -> dict[str, str]:
        # Only the scenario's config file speaks: no THIMBLE_* setting of the caller reaches the members.
        inherited = {
            k: v for k, v in os.environ.items() if not k.startswith("THIMBLE_") or k == "THIMBLE_RUN_DIR"
        }
        return {
            **inherited,
            "PYTHONPATH": str(REPO_ROOT),
            "THIMBLE_CONFIG": "",
            "GUARANTEE_SOURCE": self.source,
            "GUARANTEE_OUTPUT": self.output,
            "GUARANTEE_HANDLER": self.scenario.handler,
            "GUARANTEE_SINKS": "topic" if self.scenario.exactly_once else "all",
            "GUARANTEE_FEATURE_SET": self.feature_set,
            "GUARANTEE_DATASET": self.dataset,
            "GUARANTEE_SLOW_IDS": ",".join(map(str, self.slow_ids)),
            "GUARANTEE_SLOW_S": str(self.slow_s),
            "GUARANTEE_COUNTED": self.counted or "",
        }

    def _admin_config(self) -> dict[str, Any]:
        return {"bootstrap.servers": self.cluster.bootstrap, "logger": QUIET}

    def create_topics(self) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

        admin = AdminClient(self._admin_config())
        config = {"min.insync.replicas": "2"}
        names = [self.source, self.output, self.dlq]
        if self.counted:
            names += [self.counted, f"{self.counted}.dlq"]
        topics = [NewTopic(t, PARTITIONS, 3, config=config) for t in names]
        for future in admin.create_topics(topics).values():
            future.result(timeout=60)

        def leaders_known() -> bool:
            metadata = admin.list_topics(timeout=10).topics
            return all(
                t in metadata
                and len(metadata[t].partitions) == PARTITIONS
                and all(p.leader >= 0 for p in metadata[t].partitions.values())
                for t in names
            )

        if not wait_for(leaders_known, 60, interval=0.5):
            raise RuntimeError(f"the topics of {self.prefix} got no leaders in 60s")

    # -- load -------------------------------------------------------------------------------------

    def produce(self, load_s: float) -> None:
        from confluent_kafka import Producer

        producer = Producer(
            {
                "bootstrap.servers": self.cluster.bootstrap,
                "acks": "all",
                "enable.idempotence": True,
                # As the consumer's producer: a leader change cannot reorder two requests and lose one.
                "max.in.flight.requests.per.connection": 1,
                "linger.ms": 5,
                "message.max.bytes": 2_000_000,
                "message.timeout.ms": 300_000,
                "logger": QUIET,
            }
        )
        records = self.workload.records
        started = time.monotonic()

        def delivered_to(index: int) -> Any:
            def report(err: Any, msg: Any) -> None:
                if err is not None:
                    self.send_errors.append(f"record {index}: {err}")

            return report

        def counted(err: Any, msg: Any) -> None:
            if err is not None:
                self.send_errors.append(f"a copy for the stateful count: {err}")

        def send(topic: str, record: Record, **kwargs: Any) -> None:
            while True:
                try:
                    producer.produce(topic, record.value, record.key, **kwargs)
                    return
                except BufferError:
                    producer.poll(0.1)

        for index, record in enumerate(records):
            due = started + load_s * index / len(records)
            while time.monotonic() < due:
                producer.poll(min(0.05, max(0.0, due - time.monotonic())))
            send(self.source, record, headers=record.headers, on_delivery=delivered_to(index))
            if self.counted and not record.poison:
                send(self.counted, record, on_delivery=counted)
        if producer.flush(300) != 0:
            self.send_errors.append("the producer did not flush within 300s")

    # -- attacks ----------------------------------------------------------------------------------

    def _main_member(self) -> Member | None:
        live = [m for m in self.group.live() if m not in [leaving for _, leaving in self._leaving]]
        return live[0] if live else None

    def attack(self, what: Attack) -> None:
        if what == "kill_worker":
            target = self._main_member()
            if target is None:
                return
            if wait_for(lambda: len(target.workers()) == WORKERS, 60, interval=0.2):
                _kill(self.rng.choice(target.workers()))
                self.result.kills["worker"] += 1
        elif what == "kill_supervisor":
            member = self._main_member()
            if member is None:
                return
            workers = member.workers()
            member.proc.kill()
            member.proc.wait(10)
            self.result.kills["supervisor"] += 1
            wait_for(lambda: not any(alive(w) for w in workers), ORPHAN_GRACE_S, interval=0.2)
            orphans = self.group.leftovers()
            if orphans:
                self.result.orphans += len(orphans)
                for pid in orphans:
                    _kill(pid)
            self.group.start(WORKERS)
        elif what == "kill_leader":
            partition = self.rng.randrange(PARTITIONS)
            if self.cluster.kill_and_restart(lambda: self._leader_of(self.source, partition)) is not None:
                self.result.kills["broker"] += 1
        elif what == "join_leave":
            joined = self.group.start(1)
            self._leaving.append((time.monotonic() + JOINED_FOR_S, joined))
            self.result.kills["join_leave"] += 1

    def _leader_of(self, topic: str, partition: int) -> int | None:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(self._admin_config())
        leader = admin.list_topics(topic, timeout=10).topics[topic].partitions[partition].leader
        return leader if leader > 0 else None

    def _wait_consuming(self, member: Member, workers: int, timeout_s: float = 120.0) -> None:
        """Until each of the member's workers has joined the group (its log says "consuming")."""
        if not wait_for(lambda: member.log_count('"consuming"') >= workers, timeout_s, interval=0.2):
            raise RuntimeError(
                f"{member.name} did not start consuming within {timeout_s:.0f}s; see {member.log_path}"
            )

    def _let_leave(self, now: float | None = None) -> None:
        """Stop (SIGTERM) the members that joined for a while, once their time is up and they consume."""
        for due, member in list(self._leaving):
            if now is not None and (now < due or not member.log_count('"consuming"')):
                continue
            self._wait_consuming(member, 1)
            self.group.stop(member)
            self._leaving.remove((due, member))

    # -- the run ----------------------------------------------------------------------------------

    def run(self, drain_timeout_s: float) -> Result:
        t0 = time.monotonic()
        try:
            self.create_topics()
            self._wait_consuming(self.group.start(WORKERS), WORKERS)
            self._phase("start", t0)
            load_s = BASE_LOAD_S * self.scale
            plan = sorted(
                (self.rng.uniform(0.15, 0.85) * load_s, attack)
                for _ in range(self.scale)
                for attack in self.scenario.attacks
            )
            producer = threading.Thread(target=self.produce, args=(load_s,), name="producer")
            producer.start()
            started = time.monotonic()
            for at, attack in plan:
                while time.monotonic() < started + at:
                    self._let_leave(time.monotonic())
                    time.sleep(0.1)
                self.attack(attack)
            producer.join()
            self._let_leave()
            self._phase("load and attacks", t0)
            self.result.completed = self._wait_caught_up(drain_timeout_s)
            self._phase("catch up", t0)
            for member in self.group.live():
                self._wait_consuming(member, WORKERS)  # a SIGTERM before the handlers are set kills it
            for member in self.group.live():
                code = self.group.stop(member)
                if code not in (0, None):
                    self.result.problems.append(f"{member.name} exited {code} on SIGTERM")
            self._phase("stop", t0)
            self.cluster.wait_restarts()
            self._audit()
            self._phase("audit", t0)
        finally:
            self.group.kill_all()
            self.result.seconds = time.monotonic() - t0
        return self.result

    def _phase(self, name: str, t0: float) -> None:
        self.result.phases[name] = round(time.monotonic() - t0 - sum(self.result.phases.values()), 1)

    def _wait_caught_up(self, timeout_s: float) -> bool:
        """Until the group committed every record of the source (twice in a row, a second apart)."""
        from thimble.common.config import load_settings
        from thimble.consumer import ConsumerSettings, group_lag

        settings = load_settings(ConsumerSettings, self.group.config)
        logging.getLogger("thimble.consumer.librdkafka").setLevel(logging.CRITICAL)
        streak = 0

        def caught_up() -> bool:
            nonlocal streak
            try:
                lags = group_lag(
                    settings, self.prefix, [self.source, *([self.counted] if self.counted else [])]
                )
            except Exception:
                streak = 0
                return False
            done = all(p.committed is not None and p.lag == 0 for p in lags)
            streak = streak + 1 if done else 0
            return streak >= 2

        return wait_for(caught_up, timeout_s, interval=1.0)

    def _audit(self) -> None:
        r = self.result
        if self.cluster.restart_errors:
            r.problems.append(f"a broker did not come back: {self.cluster.restart_errors[0]}")
        if self.send_errors:
            r.problems.append(f"the suite could not send {len(self.send_errors)}: {self.send_errors[0]}")
        if not r.completed:
            r.problems.append("the group did not commit every record before the deadline")
        valid = self.workload.valid_ids
        bootstrap = self.cluster.bootstrap
        source = _audit.sent_records(self.workload.records, _audit.read_topic(bootstrap, self.source))
        r.resent = source.again
        outputs = _audit.count_ids(
            valid, _audit.output_ids(_audit.read_topic(bootstrap, self.output)), "topic", source.copies
        )
        dead = _audit.audit_dead_letters(source.poison, _audit.read_topic(bootstrap, self.dlq), self.source)
        sinks = [outputs]
        if not self.scenario.exactly_once:
            landed = _audit.count_ids(
                valid, _audit.landed_ids(self.landing, self.dataset), "landing", source.copies
            )
            online = _audit.audit_online_store(
                self.cluster.redis_url, KEY_PREFIX, self.feature_set, self.workload.latest_by_entity()
            )
            assert self.counted is not None
            copies = _audit.sent_records(self.workload.records, _audit.read_topic(bootstrap, self.counted))
            counted = _audit.audit_counts(
                self.cluster.redis_url,
                KEY_PREFIX,
                self.feature_set + COUNTS_SUFFIX,
                self.workload.counts_by_entity(copies.copies),
            )
            sinks += [landed, online, counted]
        r.lost = sum(c.lost for c in sinks) + dead.lost
        r.duplicated = outputs.duplicated + dead.duplicated
        r.dlq_exact = dead.lost == 0 and dead.unexpected == 0 and dead.wrong == 0
        if self.scenario.exactly_once and dead.duplicated:
            r.dlq_exact = False
        for counts in [*sinks, dead]:
            r.problems.extend(counts.examples)
        if self.scenario.exactly_once and outputs.duplicated:
            r.problems.append(f"topic: {outputs.duplicated} duplicated in exactly-once mode")
        if self.scenario.exactly_once and dead.duplicated:
            r.problems.append(f"dead letters: {dead.duplicated} duplicated in exactly-once mode")
        if r.orphans:
            r.problems.append(f"{r.orphans} worker(s) kept running after their supervisor was killed")
        r.crashes = self._crashes()
        evictions = [
            f"{member.name}: {lines}"
            for member in self.group.members
            for lines in member.log_lines("maximum poll interval", before=8)
        ]
        if evictions:
            r.problems.append(
                f"a slow handler cost the group membership {len(evictions)} time(s) (max.poll.interval.ms)"
            )
            r.problems.extend(evictions)
        r.problems = list(dict.fromkeys(r.problems))

    def _crashes(self) -> Counter[str]:
        """Worker exits the suite did not cause, by the failure each worker logged before exiting."""
        found: Counter[str] = Counter()
        for member in self.group.members:
            try:
                found += worker_exits(member.log_path.read_text(errors="replace").splitlines())
            except FileNotFoundError:
                continue
        return found


def worker_exits(log_lines: Iterable[str]) -> Counter[str]:
    """Exits a supervisor logged with a code other than 0 or -9 (a clean stop, the suite's kill -9), each
    under the known failure its worker logged last before it, or ``exit`` when it logged none."""
    found: Counter[str] = Counter()
    last_failure: dict[object, str] = {}
    for line in log_lines:
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(record, dict):
            continue
        worker = record.get("worker")
        if str(record.get("message", "")).startswith("worker exited"):
            cause = last_failure.pop(worker, "exit")
            if record.get("exit_code") not in (0, -9):
                found[cause] += 1
            continue
        if record.get("level") in ("error", "critical"):
            for needle, label in _KNOWN_FAILURES.items():
                if needle in line:
                    last_failure[worker] = label
    return found


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def describe(result: Result) -> dict[str, Any]:
    """A result as JSON-able data (for ``--json`` and the pytest failure message)."""
    s = result.scenario
    return {
        "scenario": s.name,
        "mode": s.mode,
        "handler": s.handler,
        "protocol": s.protocol,
        "slow_handler": s.slow,
        "sent": result.sent,
        "poison": result.poison,
        "lost": result.lost,
        "duplicated": result.duplicated,
        "resent": result.resent,
        "dlq_exact": result.dlq_exact,
        "kills": dict(result.kills),
        "orphans": result.orphans,
        "crashes": dict(result.crashes),
        "seconds": round(result.seconds, 1),
        "phases_s": result.phases,
        "passed": result.passed,
        "problems": result.problems,
    }


def to_json(results: list[Result]) -> bytes:
    return orjson.dumps([describe(r) for r in results], option=orjson.OPT_INDENT_2)
