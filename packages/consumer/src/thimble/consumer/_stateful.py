"""A stateful handler over a batch of events: read each entity's state once, apply its events in
order, write it back by compare-and-set, and only then hand the new states to the other sinks.

A write that lost the compare-and-set (someone wrote the entity since it was read) is read and applied
again, so the handler may be called more than once for an event: it must depend only on the event and
the state it is given.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from thimble.common.logging import get_logger
from thimble.consumer._dead_letters import DeadLetterWriter
from thimble.consumer._delivery import Pending
from thimble.consumer._metrics import HandlerMetrics
from thimble.consumer._processing import Processor, RetryPolicy, _decode_stage, context_of
from thimble.consumer._signature import HandlerSpec
from thimble.consumer._state import StateError, StateSpec, advance, fields_of, new_value, parse
from thimble.consumer._state_store import StateBackend, Write
from thimble.consumer._writers import SinkWriter
from thimble.consumer.errors import SinkError

log = get_logger(__name__)

# Rounds of read-apply-write for entities whose compare-and-set keeps losing, and Redis attempts per round.
MAX_ROUNDS = 20
STORE_ATTEMPTS = 5


@dataclass(slots=True)
class _Plan:
    """One entity's events applied to its state: what to write, then what to emit and dead-letter."""

    key: str
    version: int
    fields: list[bytes | str] | None = None
    outputs: list[tuple[Any, Any]] = field(default_factory=list)
    dead: list[tuple[Any, BaseException, str, int]] = field(default_factory=list)
    skipped: int = 0


class StatefulProcessor(Processor):
    """Runs a stateful handler (``func(event, state) -> new state``) over its buffered events."""

    def __init__(
        self,
        spec: HandlerSpec,
        writers: Sequence[SinkWriter],
        dead_letters: DeadLetterWriter,
        policy: RetryPolicy,
        dlq_suffix: str,
        metrics: HandlerMetrics,
        wait: Callable[[float], bool],
        states: StateBackend,
        prefix: str,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        super().__init__(spec, writers, dead_letters, policy, dlq_suffix, metrics, wait)
        assert spec.state is not None
        self.state: StateSpec = spec.state
        self.states = states
        self.prefix = prefix
        self.sleep = sleep
        self.ttl = spec.state.ttl_s or 0
        self._skipped, self._conflicts = metrics.state_counters()

    def handle(self, msg: Any, pending: Pending) -> None:
        self.handle_batch([msg], pending)

    def handle_batch(self, msgs: list[Any], pending: Pending) -> None:
        """Apply ``msgs`` (in partition order) to their entities' states; outputs and dead letters hold ``pending``."""
        by_key: dict[str, tuple[str, list[tuple[Any, Any]]]] = {}
        feature_set = self.state.feature_set
        for msg in msgs:
            try:
                value = self._decode(msg.value())
            except Exception as exc:
                self._dead_letter(msg, exc, _decode_stage(exc), 0, pending)
                continue
            try:
                entity = self.state.entity_of(value)
            except Exception as exc:
                self._dead_letter(msg, exc, "key", 0, pending)
                continue
            key = feature_set.online_key(self.prefix, entity)
            by_key.setdefault(key, (entity, []))[1].append((msg, value))
        self.metrics.batch_size.observe(len(msgs))
        todo = list(by_key)
        try:
            for _round in range(MAX_ROUNDS):
                stored = self._with_retries("read", self.states.read, todo)
                plans = [
                    self._plan(key, *by_key[key], fields) for key, fields in zip(todo, stored, strict=True)
                ]
                writes: list[Write] = [(p.key, p.version, p.fields, self.ttl) for p in plans if p.fields]
                written = self._with_retries("write", self.states.write, writes) if writes else []
                lost = {w[0] for w, ok in zip(writes, written, strict=True) if not ok}
                if lost:
                    self._conflicts.inc(len(lost))
                for plan in plans:
                    if plan.key not in lost:
                        self._finish(plan, pending)
                todo = [key for key in todo if key in lost]
                if not todo:
                    return
            raise SinkError(f"{len(todo)} entities kept changing under this writer")
        except SinkError as exc:
            # The batch's offsets are never committed: its events come again and are applied once.
            pending.hold()
            pending.fail(SinkError(f"state of feature set {feature_set.name!r}: {exc}"))

    def _plan(self, key: str, entity: str, events: list[tuple[Any, Any]], stored: dict[str, bytes]) -> _Plan:
        feature_set = self.state.feature_set
        try:
            state = parse(feature_set, stored)
        except StateError as exc:
            error = StateError(f"{key}: {exc}")
            return _Plan(key, 0, dead=[(msg, error, "state", 0) for msg, _ in events])
        plan = _Plan(key, state.version)
        schema = feature_set.schema
        changed = replayed = False
        for msg, value in events:
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            if state.seen(topic, partition, offset):
                # Applied before a crash or rebalance: counted once; the state as it is goes out again.
                if not replayed and state.value is not None:
                    plan.outputs.append((state.value, msg))
                replayed = True
                plan.skipped += 1
                continue
            # A copy of its own (a handler that changes it in place and returns it must not change
            # the states already handed out); rebuilt from its fields, faster than a deep copy.
            current = None if state.value is None else schema.model_validate(state.value.model_dump())
            kwargs = {self._context: context_of(msg)} if self._context else None
            ok, result, attempts = self._call((value, current), kwargs, msg)
            if not ok:
                plan.dead.append((msg, result, "handler", attempts))
                continue
            state.mark(topic, partition, offset)
            changed = True
            if result is None:
                continue
            try:
                updated, event_ms = advance(
                    feature_set, new_value(feature_set, result, entity), state.event_ms
                )
            except Exception as exc:
                plan.dead.append((msg, exc, "output", 1))
                continue
            state.value, state.event_ms = updated, event_ms
            plan.outputs.append((updated, msg))
        if changed:
            plan.fields = fields_of(state)
        return plan

    def _finish(self, plan: _Plan, pending: Pending) -> None:
        if plan.skipped:
            self._skipped.inc(plan.skipped)
        for msg, exc, stage, attempts in plan.dead:
            self._dead_letter(msg, exc, stage, attempts, pending)
        if plan.outputs and self.writers:
            self._dispatch(plan.outputs, [m for _, m in plan.outputs], pending)
        elif plan.outputs:
            self.metrics.count_processed(len(plan.outputs))

    def _with_retries(self, what: str, call: Callable[[Any], list[Any]], arg: Any) -> list[Any]:
        """``call(arg)``, retried with backoff on any error; :class:`SinkError` once attempts are spent."""
        for attempt in range(1, STORE_ATTEMPTS + 1):
            try:
                return call(arg)
            except Exception as exc:
                if attempt == STORE_ATTEMPTS:
                    raise SinkError(f"{what}: {type(exc).__name__}: {exc}") from exc
                delay = min(5.0, 0.1 * 2**attempt) * (0.5 + random.random() / 2)
                log.warning(
                    "online store state access failed, retrying",
                    extra={
                        "feature_set": self.state.feature_set.name,
                        "operation": what,
                        "attempt": attempt,
                        "error": str(exc),
                        "retry_in_s": round(delay, 2),
                    },
                )
                self.sleep(delay)
        raise AssertionError("unreachable")
