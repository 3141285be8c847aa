"""The :class:`App`: a declaration of typed handlers, each reading topics and writing sinks.

An App is plain data plus the user's functions; engines take it: ``Runner(app, settings).run()``
consumes from Kafka, ``TestClient(app)`` feeds it in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from thimble.common.config import check_topic_name
from thimble.common.features import FeatureSet
from thimble.consumer._signature import HandlerSpec, inspect_handler, where
from thimble.consumer._state import StateSpec
from thimble.consumer.config import ConsumerSettings
from thimble.consumer.errors import HandlerSignatureError
from thimble.consumer.sinks import Landing, OnlineStore, Sink, Topic, check_output

F = TypeVar("F", bound=Callable[..., Any])

SinkArg = str | Topic | OnlineStore | Landing
SinkSpec = SinkArg | Sequence[SinkArg] | None


def _sinks(value: SinkSpec, func: Callable[..., Any]) -> tuple[Sink, ...]:
    items: Sequence[Any] = (
        () if value is None else [value] if isinstance(value, str | Topic | OnlineStore | Landing) else value
    )
    out: list[Sink] = []
    for item in items:
        if isinstance(item, str):
            if not item:
                raise HandlerSignatureError(f"handler {where(func)}: a sink topic name cannot be empty")
            out.append(Topic(item))
        elif isinstance(item, Topic | OnlineStore | Landing):
            out.append(item)
        else:
            raise HandlerSignatureError(
                f"handler {where(func)}: sink must be a topic name, Topic, OnlineStore or Landing, got {item!r}"
            )
    return tuple(out)


class App:
    """A consumer application: ``app = App("client-features")``, then ``@app.handler(...)`` functions.

    ``name`` is the default consumer group. ``retry_on`` is the default tuple of exceptions retried
    with backoff (default: :class:`~thimble.consumer.Retriable`, ``TimeoutError``, ``ConnectionError``
    and retriable Kafka errors); other exceptions dead-letter the message at once.
    """

    def __init__(self, name: str, *, retry_on: tuple[type[BaseException], ...] | None = None) -> None:
        if not name:
            raise HandlerSignatureError("App needs a non-empty name (it is the default consumer group)")
        self.name = name
        self.retry_on = retry_on
        self.handlers: list[HandlerSpec] = []

    def handler(
        self,
        source: str | Sequence[str],
        sink: SinkSpec = None,
        *,
        batch_size: int | None = None,
        batch_wait_ms: int | None = None,
        retry_on: tuple[type[BaseException], ...] | None = None,
        dlq: str | None = None,
    ) -> Callable[[F], F]:
        """Register a handler of the records of ``source`` whose outputs go to ``sink``.

        The first parameter's type decides decoding: a pydantic model, ``dict``, ``str`` or ``bytes``
        (``list[T]`` or a pandas ``DataFrame`` for a batch handler, batches of ``batch_size`` records
        or ``batch_wait_ms``); a parameter typed :class:`~thimble.consumer.Context` (``list[Context]``)
        receives record metadata. Return ``None`` (no output), one output, or a list of outputs.
        ``dlq`` overrides the dead-letter topic (default ``<source>`` + ``consumer.dlq_suffix``).
        """
        sources = (source,) if isinstance(source, str) else tuple(source)

        def register(func: F) -> F:
            if not sources or not all(isinstance(s, str) and s for s in sources):
                raise HandlerSignatureError(
                    f"handler {where(func)}: source must be a topic name or a list of them"
                )
            spec = inspect_handler(
                func,
                sources=sources,
                sinks=_sinks(sink, func),
                batch_size=batch_size,
                batch_wait_ms=batch_wait_ms,
                retry_on=retry_on,
                dlq=dlq,
            )
            self._add(spec)
            return func

        return register

    def stateful(
        self,
        source: str | Sequence[str],
        *,
        state: FeatureSet,
        key: Callable[[Any], Any] | None = None,
        sink: SinkSpec = None,
        ttl_s: int | None = None,
        retry_on: tuple[type[BaseException], ...] | None = None,
        dlq: str | None = None,
    ) -> Callable[[F], F]:
        """Register a handler that turns an entity's state and one event into its new state.

        ``func(event, state: S | None) -> S | None`` (``S``: ``state.schema``; ``None`` in: the entity has
        no state yet; ``None`` out: no change). The state is the entity's hash in the online store, which
        also records the offsets applied to it: each event is applied once, also when it is delivered
        again. ``key(event)`` names the entity (default: the event's ``state.entity_key`` field). Each new
        state also goes to ``sink`` (topics, :class:`Landing`). ``ttl_s`` expires idle entities.
        """
        sources = (source,) if isinstance(source, str) else tuple(source)

        def register(func: F) -> F:
            if not sources or not all(isinstance(s, str) and s for s in sources):
                raise HandlerSignatureError(
                    f"handler {where(func)}: source must be a topic name or a list of them"
                )
            if not isinstance(state, FeatureSet):
                raise HandlerSignatureError(
                    f"handler {where(func)}: state must be a FeatureSet, got {state!r}"
                )
            if ttl_s is not None and ttl_s < 1:
                raise HandlerSignatureError(f"handler {where(func)}: ttl_s must be >= 1, got {ttl_s}")
            sinks = _sinks(sink, func)
            for s in sinks:
                if isinstance(s, OnlineStore):
                    raise HandlerSignatureError(
                        f"handler {where(func)}: a stateful handler writes its state to the online store "
                        f"itself; remove {s!r} from its sinks"
                    )
            spec = inspect_handler(
                func,
                sources=sources,
                sinks=sinks,
                batch_size=None,
                batch_wait_ms=None,
                retry_on=retry_on,
                dlq=dlq,
                state=StateSpec(state, key, ttl_s),
            )
            self._add(spec)
            return func

        return register

    def _add(self, spec: HandlerSpec) -> None:
        topics = [*spec.sources, *(s.name for s in spec.sinks if isinstance(s, Topic))]
        for topic in [*topics, spec.dlq] if spec.dlq is not None else topics:
            try:
                check_topic_name(topic)
            except ValueError as exc:  # else found only at run, as a missing topic or a refused creation
                raise HandlerSignatureError(f"handler {spec.where}: {exc}") from None
        for other in self.handlers:
            shared = set(other.sources) & set(spec.sources)
            if shared:
                raise HandlerSignatureError(
                    f"handler {spec.where}: topic {sorted(shared)[0]!r} is already handled by {other.where}; "
                    "one handler per source topic"
                )
        for s in spec.sinks:
            if isinstance(s, Topic) and s.name in spec.sources:
                raise HandlerSignatureError(f"handler {spec.where}: sink topic {s.name!r} is also its source")
            check_output(s, spec.output_type, spec.where)
        for other in self.handlers:
            for stateful, writer in ((spec, other), (other, spec)):
                name = _state_of(stateful)
                if name is not None and name in _online_sets(writer):
                    raise HandlerSignatureError(
                        f"handler {spec.where}: feature set {name!r} is the state of {stateful.where}; "
                        "no other handler may write it"
                    )
        self.handlers.append(spec)

    @property
    def sources(self) -> list[str]:
        """Every topic the app reads."""
        return [s for h in self.handlers for s in h.sources]

    def output_topics(self, settings: ConsumerSettings | None = None) -> list[str]:
        """Every topic the app writes: sink topics and dead-letter topics."""
        suffix = (settings or ConsumerSettings()).consumer.dlq_suffix
        out: list[str] = []
        for h in self.handlers:
            out += [s.name for s in h.sinks if isinstance(s, Topic)]
            out += [h.dlq_topic(src, suffix) for src in h.sources]
        return list(dict.fromkeys(out))

    def __repr__(self) -> str:
        return f"App({self.name!r}, handlers={[h.name for h in self.handlers]})"


def _state_of(spec: HandlerSpec) -> str | None:
    """The feature set a stateful handler keeps its state in."""
    return None if spec.state is None else spec.state.feature_set.name


def _online_sets(spec: HandlerSpec) -> set[str]:
    """Every feature set a handler writes in the online store."""
    names = {s.feature_set for s in spec.sinks if isinstance(s, OnlineStore)}
    state = _state_of(spec)
    return names if state is None else names | {state}
