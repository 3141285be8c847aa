"""One message (or batch) through one handler: decode, call with retries, hand outputs to the sinks.

Shared verbatim by the Kafka runner and the in-memory test harness, so both behave the same.
"""

from __future__ import annotations

import asyncio
import importlib
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from time import perf_counter
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from pydantic import ValidationError

from thimble.common.logging import get_logger
from thimble.consumer._codec import bytes_decoder, outputs_of, plain_encoder
from thimble.consumer._dead_letters import DeadLetterWriter
from thimble.consumer._delivery import Pending
from thimble.consumer._metrics import HandlerMetrics
from thimble.consumer._signature import HandlerSpec
from thimble.consumer._transport import ANY_PARTITION, record_size, too_large
from thimble.consumer._writers import SinkWriter, TopicWriter
from thimble.consumer.context import Context
from thimble.consumer.errors import DecodeError, RecordTooLarge, Retriable

log = get_logger(__name__)

DEFAULT_RETRY_ON: tuple[type[BaseException], ...] = (Retriable, TimeoutError, ConnectionError)


class Abandoned(Exception):
    """Shutdown was requested while a message waited for a retry; it stays uncommitted."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded exponential backoff with jitter."""

    retry_on: tuple[type[BaseException], ...] = DEFAULT_RETRY_ON
    max_retries: int = 3
    backoff_ms: int = 100
    backoff_max_ms: int = 10_000

    def delay_s(self, retry: int) -> float:
        """Seconds before retry number ``retry`` (1-based): ``min(max, base * 2**(retry-1))``, 50-100% of it."""
        ceiling = min(self.backoff_max_ms, self.backoff_ms * 2 ** (retry - 1)) / 1000
        return float(ceiling * (0.5 + random.random() / 2))

    def retriable(self, exc: BaseException) -> bool:
        if isinstance(exc, self.retry_on):
            return True
        if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
            return bool(exc.args[0].retriable())
        return False


def context_of(msg: Any) -> Context:
    return Context(
        topic=msg.topic(),
        partition=msg.partition(),
        offset=msg.offset(),
        key=msg.key(),
        headers=tuple(msg.headers() or ()),
        timestamp_ms=msg.timestamp()[1],
    )


class _Unkeyed:
    """A batch output not paired with one input: no default key, metadata of the batch's last record."""

    __slots__ = ("_msg",)

    def __init__(self, msg: Any) -> None:
        self._msg = msg

    def key(self) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._msg, name)


_loops = threading.local()


def _run_async(coro: Any) -> Any:
    loop = getattr(_loops, "loop", None)
    if loop is None:
        loop = _loops.loop = asyncio.new_event_loop()
    return loop.run_until_complete(coro)


class Processor:
    """Runs one handler; every message ends handled (outputs dispatched) or dead-lettered."""

    def __init__(
        self,
        spec: HandlerSpec,
        writers: Sequence[SinkWriter],
        dead_letters: DeadLetterWriter,
        policy: RetryPolicy,
        dlq_suffix: str,
        metrics: HandlerMetrics,
        wait: Callable[[float], bool],
    ) -> None:
        self.spec = spec
        self.writers = list(writers)
        self.dead_letters = dead_letters
        self.policy = policy
        self.dlq_suffix = dlq_suffix
        self.metrics = metrics
        self.wait = wait
        self._decode = spec.decoder
        self._decode_bytes = bytes_decoder(spec.input_type) or spec.decoder
        self._func = spec.func
        self._context = spec.context_param
        self._observe = metrics.observe_latency
        self._is_async = spec.is_async
        # One topic sink: an output that is one plain value is encoded and sent right here.
        self._topic: TopicWriter | None = None
        if len(self.writers) == 1 and isinstance(self.writers[0], TopicWriter):
            self._topic = self.writers[0]
        self._plain_encoders: dict[type, Callable[[Any], bytes] | None] = {}
        direct = getattr(self._topic.transport, "direct_produce", None) if self._topic else None
        self._produce: Callable[..., None] | None = direct() if direct is not None else None

    # -- one message ------------------------------------------------------------------------------

    def handle(self, msg: Any, pending: Pending) -> None:
        """Handle one message; its outputs and dead letter hold ``pending`` (shared by its segment).

        The hot path of the consumer: kept flat on purpose (each call costs as much as validating a
        small message).
        """
        raw = msg.value()
        try:
            value = self._decode_bytes(raw) if raw is not None else self._decode(raw)
        except Exception as exc:
            self._dead_letter(msg, exc, _decode_stage(exc), 0, pending)
            return
        func = self._func
        kwargs = None if self._context is None else {self._context: context_of(msg)}
        started = perf_counter()
        try:
            result = func(value, **kwargs) if kwargs else func(value)
            if self._is_async:
                result = _run_async(result)
        except Exception as exc:
            self._observe(perf_counter() - started)
            ok, result, attempts = self._retry((value,), kwargs, msg, exc)
            if not ok:
                self._dead_letter(msg, result, "handler", attempts, pending)
                return
        else:
            self._observe(perf_counter() - started)
        if result is None:
            self.metrics.unpublished_processed += 1
            return
        topic = self._topic
        if topic is not None:
            cls = type(result)
            try:
                encode = self._plain_encoders[cls]
            except KeyError:
                encode = self._plain_encoders[cls] = plain_encoder(cls)
            if encode is not None:
                try:
                    encoded = encode(result)
                except Exception as exc:
                    self._dead_letter(msg, exc, "output", 1, pending)
                    return
                # The producer's own produce when the transport allows it (:meth:`KafkaTransport.send`
                # when the local queue is full, as it waits for room).
                produce = self._produce
                try:
                    if produce is None:
                        topic.transport.send(topic.topic, msg.key(), encoded, None, pending)
                    else:
                        pending.remaining += 1
                        try:
                            produce(topic.topic, encoded, msg.key(), ANY_PARTITION, pending)
                        except BufferError:
                            pending.remaining -= 1
                            topic.transport.send(topic.topic, msg.key(), encoded, None, pending)
                        except KafkaException as exc:
                            pending.remaining -= 1
                            raise (
                                too_large(exc, topic.topic, record_size(msg.key(), encoded)) or exc
                            ) from None
                except RecordTooLarge as exc:
                    self._dead_letter(msg, exc, "output", 1, pending)
                    return
                self.metrics.unpublished_processed += 1
                return
        if isinstance(result, list | tuple) or type(result).__name__ == "DataFrame":
            self._dispatch([(output, msg) for output in outputs_of(result)], [msg], pending)
        else:
            self._dispatch_one(result, msg, pending)

    # -- a batch ----------------------------------------------------------------------------------

    def handle_batch(self, msgs: list[Any], pending: Pending) -> None:
        """Handle a batch; its outputs and dead letters hold ``pending``."""
        decode = self._decode_bytes
        try:
            # Each record on its own (never joined: a malformed record could swallow its neighbours).
            values = [decode(msg.value()) for msg in msgs]
            good = msgs
        except Exception:
            values, good = self._decode_each(msgs, pending)
        self.metrics.batch_size.observe(len(msgs))
        if good:
            arg: Any = values
            if self.spec.dataframe:
                arg = importlib.import_module("pandas").DataFrame(values)
            kwargs = {self._context: [context_of(m) for m in good]} if self._context else None
            ok, result, attempts = self._call((arg,), kwargs, good[-1])
            if not ok:
                for msg in good:
                    self._dead_letter(msg, result, "handler", attempts, pending)
                return
            failed = isinstance(result, list | tuple) and any(isinstance(i, BaseException) for i in result)
            if failed and len(result) == len(good):
                result, good = self._dead_letter_failed(result, good, pending)
            elif failed:  # not one item per input: whose it is cannot be told, so it fails them all
                error = next(item for item in result if isinstance(item, BaseException))
                for msg in good:
                    self._dead_letter(msg, error, _item_stage(error), 1, pending)
                return
            if not self._send_paired(result, good, pending):
                self._dispatch(self._pair(result, good), good, pending)

    def _decode_each(self, msgs: list[Any], pending: Pending) -> tuple[list[Any], list[Any]]:
        """The values of the records that decode, and those records; the others are dead-lettered."""
        values: list[Any] = []
        good: list[Any] = []
        for msg in msgs:
            try:
                values.append(self._decode(msg.value()))
                good.append(msg)
            except Exception as exc:
                self._dead_letter(msg, exc, _decode_stage(exc), 0, pending)
        return values, good

    def _dead_letter_failed(
        self, result: list[Any], good: list[Any], pending: Pending
    ) -> tuple[list[Any], list[Any]]:
        """A batch result with an exception in place of some inputs' outputs: those inputs dead-lettered
        (stage ``decode``/``validate`` for a decoding error, else ``handler``); the rest, still paired."""
        outputs: list[Any] = []
        kept: list[Any] = []
        for item, msg in zip(result, good, strict=True):
            if isinstance(item, BaseException):
                self._dead_letter(msg, item, _item_stage(item), 1, pending)
            else:
                outputs.append(item)
                kept.append(msg)
        return outputs, kept

    def _send_paired(self, result: Any, good: list[Any], pending: Pending) -> bool:
        """:meth:`_dispatch` of a batch's result for the common case, one topic sink and one plain
        output (or ``None``) per record; ``False`` (nothing sent) when the result is not that."""
        topic = self._topic
        if topic is None or type(result) is not list or len(result) != len(good):
            return False
        encoders = self._plain_encoders
        records: list[tuple[Any, bytes]] = []
        unencodable: list[tuple[Any, Exception]] = []
        for item, msg in zip(result, good, strict=True):
            if item is None:
                continue
            cls = type(item)
            encode = encoders[cls] if cls in encoders else encoders.setdefault(cls, plain_encoder(cls))
            if encode is None:
                return False
            try:
                records.append((msg, encode(item)))
            except Exception as exc:
                unencodable.append((msg, exc))
        for msg, error in unencodable:  # that input alone
            self._dead_letter(msg, error, "output", 1, pending)
        name, produce = topic.topic, self._produce
        refused = len(unencodable)
        for msg, value in records:
            key = msg.key()
            try:
                if produce is not None:
                    pending.remaining += 1
                    try:
                        produce(name, value, key, ANY_PARTITION, pending)
                        continue
                    except BufferError:
                        pending.remaining -= 1
                    except KafkaException as exc:
                        pending.remaining -= 1
                        raise too_large(exc, name, record_size(key, value)) or exc from None
                topic.transport.send(name, key, value, None, pending)  # waits for room in the queue
            except RecordTooLarge as exc:
                self._dead_letter(msg, exc, "output", 1, pending)
                refused += 1
        self.metrics.unpublished_processed += len(good) - refused
        return True

    def _pair(self, result: Any, good: list[Any]) -> list[tuple[Any, Any]]:
        if type(result).__name__ == "DataFrame" and hasattr(result, "to_dict"):
            result = result.to_dict("records")
        if isinstance(result, list | tuple) and len(result) == len(good):
            return [(out, msg) for item, msg in zip(result, good, strict=True) for out in outputs_of(item)]
        last = _Unkeyed(good[-1])
        return [(out, last) for out in outputs_of(result)]

    # -- shared -----------------------------------------------------------------------------------

    def _call(self, args: tuple[Any, ...], kwargs: dict[str, Any] | None, msg: Any) -> tuple[bool, Any, int]:
        """``(True, result, attempts)``, or ``(False, error, attempts)`` once retries are spent."""
        started = perf_counter()
        try:
            result = self._func(*args, **kwargs) if kwargs else self._func(*args)
            if self._is_async:
                result = _run_async(result)
        except Exception as exc:
            self._observe(perf_counter() - started)
            return self._retry(args, kwargs, msg, exc)
        self._observe(perf_counter() - started)
        return True, result, 1

    def _retry(
        self, args: tuple[Any, ...], kwargs: dict[str, Any] | None, msg: Any, exc: Exception
    ) -> tuple[bool, Any, int]:
        """Call again after ``exc`` failed the first attempt, with backoff, while the error is retriable."""
        func = self._func
        attempt = 1
        while True:
            if attempt > self.policy.max_retries or not self.policy.retriable(exc):
                return False, exc, attempt
            delay = self.policy.delay_s(attempt)
            self.metrics.retried.inc()
            log.warning(
                "handler failed, retrying",
                extra={
                    "topic": msg.topic(),
                    "partition": msg.partition(),
                    "offset": msg.offset(),
                    "handler": self.spec.name,
                    "attempt": attempt,
                    "error": f"{type(exc).__name__}: {exc}",
                    "retry_in_s": round(delay, 3),
                },
            )
            if self.wait(delay):
                raise Abandoned from exc
            attempt += 1
            started = perf_counter()
            try:
                result = func(*args, **kwargs) if kwargs else func(*args)
                if self._is_async:
                    result = _run_async(result)
            except Exception as failed:
                self._observe(perf_counter() - started)
                exc = failed
            else:
                self._observe(perf_counter() - started)
                return True, result, attempt

    def _dispatch_one(self, output: Any, msg: Any, pending: Pending) -> None:
        """:meth:`_dispatch` for the common case: one output of one message."""
        writers = self.writers
        try:
            if len(writers) == 1:
                item = writers[0].prepare(output, msg)
            else:
                prepared = [writer.prepare(output, msg) for writer in writers]
        except Exception as exc:
            self._dead_letter(msg, exc, "output", 1, pending)
            return
        try:
            if len(writers) == 1:
                writers[0].write(item, pending)
            else:
                for writer, item in zip(writers, prepared, strict=True):
                    writer.write(item, pending)
        except RecordTooLarge as exc:  # the outputs written before it stay
            self._dead_letter(msg, exc, "output", 1, pending)
            return
        self.metrics.count_processed(1)

    def _dispatch(self, outputs: list[tuple[Any, Any]], msgs: list[Any], pending: Pending) -> None:
        """Prepare every output, then write those of the inputs whose outputs all prepared; an input
        with an output a sink refuses is dead-lettered (every input, for an output of the whole batch)."""
        writers = self.writers
        prepared: list[tuple[SinkWriter, Any, Any]] = []
        refused: dict[int, tuple[Any, Exception]] = {}  # by input
        for out, m in outputs:
            try:
                prepared.extend([(w, w.prepare(out, m), m) for w in writers])
            except Exception as exc:
                for msg in msgs if isinstance(m, _Unkeyed) else [m]:
                    refused.setdefault(id(msg), (msg, exc))
        if refused:
            prepared = [p for p in prepared if not _refused(p[2], msgs, refused)]
        for writer, item, m in prepared:
            try:
                writer.write(item, pending)
            except RecordTooLarge as exc:  # the outputs written before it stay
                for msg in msgs if isinstance(m, _Unkeyed) else [m]:
                    refused.setdefault(id(msg), (msg, exc))
        for msg, error in refused.values():
            self._dead_letter(msg, error, "output", 1, pending)
        self.metrics.count_processed(len(msgs) - len(refused))

    def _dead_letter(self, msg: Any, exc: BaseException, stage: str, attempts: int, pending: Pending) -> None:
        topic = self.spec.dlq_topic(msg.topic(), self.dlq_suffix)
        self.metrics.failed(stage).inc()
        self.metrics.dead_lettered.inc()
        log.warning(
            "message dead-lettered",
            extra={  # this record's place, not the batch's last (what the log context names)
                "topic": msg.topic(),
                "partition": msg.partition(),
                "offset": msg.offset(),
                "handler": self.spec.name,
                "stage": stage,
                "dead_letter_topic": topic,
                "error": f"{type(exc).__name__}: {str(exc)[:300]}",
            },
        )
        self.dead_letters.send(topic, msg, exc, stage, attempts, self.spec.name, pending)


def _refused(m: Any, msgs: list[Any], refused: dict[int, Any]) -> bool:
    """Whether the input of output ``m`` (every input, for an output of the whole batch) is refused."""
    return any(id(msg) in refused for msg in msgs) if isinstance(m, _Unkeyed) else id(m) in refused


def _item_stage(exc: BaseException) -> str:
    """The stage of an exception a batch handler returned in place of an output."""
    return _decode_stage(exc) if isinstance(exc, ValidationError | DecodeError) else "handler"


def _decode_stage(exc: BaseException) -> str:
    if isinstance(exc, ValidationError) and not any(e["type"] == "json_invalid" for e in exc.errors()):
        return "validate"
    return "decode"
