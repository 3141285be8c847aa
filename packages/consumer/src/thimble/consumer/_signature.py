"""Read a handler's signature once, at decoration time, into a :class:`HandlerSpec`.

Every problem is reported as a :class:`HandlerSignatureError` naming the function, file and line.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from thimble.consumer._codec import Decoder, make_decoder
from thimble.consumer._state import StateSpec
from thimble.consumer.context import Context
from thimble.consumer.errors import HandlerSignatureError
from thimble.consumer.sinks import Sink

SUPPORTED = "a pydantic model, dict, str, bytes (or list[...] / pandas.DataFrame of them for batches)"


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """Everything the runtime needs to feed one handler."""

    func: Callable[..., Any]
    name: str
    where: str
    sources: tuple[str, ...]
    sinks: tuple[Sink, ...]
    input_type: Any
    decoder: Decoder
    batch: bool
    dataframe: bool
    context_param: str | None
    is_async: bool
    batch_size: int | None
    batch_wait_ms: int | None
    retry_on: tuple[type[BaseException], ...] | None
    dlq: str | None
    output_type: Any
    state: StateSpec | None = None

    @property
    def input_model(self) -> type[BaseModel] | None:
        return self.input_type if _is_model(self.input_type) else None

    def dlq_topic(self, source: str, suffix: str) -> str:
        """The dead-letter topic of messages read from ``source``."""
        return self.dlq or f"{source}{suffix}"


def where(func: Callable[..., Any]) -> str:
    """``name (file.py:12)`` for error messages."""
    code = getattr(func, "__code__", None)
    name = getattr(func, "__qualname__", repr(func))
    if code is None:
        return name
    try:
        file = inspect.getsourcefile(func) or code.co_filename
    except TypeError:
        file = code.co_filename
    return f"{name} ({file}:{code.co_firstlineno})"


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _is_dataframe(tp: Any) -> bool:
    return isinstance(tp, type) and tp.__name__ == "DataFrame" and tp.__module__.startswith("pandas")


def _fail(func: Callable[..., Any], problem: str) -> HandlerSignatureError:
    return HandlerSignatureError(f"handler {where(func)}: {problem}")


def inspect_handler(
    func: Callable[..., Any],
    *,
    sources: tuple[str, ...],
    sinks: tuple[Sink, ...],
    batch_size: int | None,
    batch_wait_ms: int | None,
    retry_on: tuple[type[BaseException], ...] | None,
    dlq: str | None,
    state: StateSpec | None = None,
) -> HandlerSpec:
    """Check ``func`` can be served and work out how to decode its input; raise a clear error if not."""
    if not callable(func):
        raise HandlerSignatureError(f"@app.handler decorates a function, got {func!r}")
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError) as exc:
        raise _fail(func, f"cannot read its signature ({exc})") from None
    try:
        hints = typing.get_type_hints(func)
    except Exception as exc:
        raise _fail(func, f"cannot resolve its type hints ({type(exc).__name__}: {exc})") from None

    params = list(signature.parameters.values())
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise _fail(func, f"'{'*' if p.kind is p.VAR_POSITIONAL else '**'}{p.name}' is not supported")
    if not params:
        raise _fail(func, f"it takes no parameter; give it one message parameter typed as {SUPPORTED}")
    first, rest = params[0], params[1:]
    if first.kind is first.KEYWORD_ONLY:
        raise _fail(func, f"the message parameter '{first.name}' must be positional")
    if first.name not in hints:
        raise _fail(func, f"parameter '{first.name}' has no type annotation; annotate it with {SUPPORTED}")
    annotation = hints[first.name]

    batch, dataframe, item_type = False, False, annotation
    origin = typing.get_origin(annotation)
    if origin is list:
        args = typing.get_args(annotation)
        if len(args) != 1:
            raise _fail(func, f"parameter '{first.name}': write list[Event], not {annotation!r}")
        batch, item_type = True, args[0]
    elif _is_dataframe(annotation):
        batch, dataframe, item_type = True, True, dict
    if item_type is Context or annotation is Context:
        raise _fail(
            func, f"the first parameter '{first.name}' is the message; put the Context parameter after it"
        )
    if typing.get_origin(item_type) is list:
        raise _fail(func, f"parameter '{first.name}': nested lists are not supported")
    try:
        decoder = make_decoder(item_type)
    except TypeError as exc:
        raise _fail(func, f"parameter '{first.name}': {exc}; use {SUPPORTED}") from None

    if state is not None:
        rest = _state_parameter(func, rest, hints, batch, state)
    context_param: str | None = None
    expected_context = list[Context] if batch else Context
    for p in rest:
        hint = hints.get(p.name)
        if hint is Context or hint == list[Context]:
            if hint != expected_context:
                want = "list[Context]" if batch else "Context"
                raise _fail(
                    func,
                    f"parameter '{p.name}': a {'batch' if batch else 'single-message'} handler takes {want}",
                )
            if context_param is not None:
                raise _fail(func, f"two Context parameters ('{context_param}' and '{p.name}')")
            context_param = p.name
        elif p.default is p.empty:
            raise _fail(
                func,
                f"parameter '{p.name}' has no default and is not typed Context; "
                "a handler takes one message parameter and optionally a Context",
            )

    if not batch and (batch_size is not None or batch_wait_ms is not None):
        raise _fail(func, "batch_size/batch_wait_ms apply to batch handlers (first parameter list[Event])")
    if batch_size is not None and batch_size < 1:
        raise _fail(func, f"batch_size must be >= 1, got {batch_size}")
    if batch_wait_ms is not None and batch_wait_ms < 0:
        raise _fail(func, f"batch_wait_ms must be >= 0, got {batch_wait_ms}")
    if retry_on is not None:
        for exc_type in retry_on:
            if not (isinstance(exc_type, type) and issubclass(exc_type, BaseException)):
                raise _fail(func, f"retry_on must hold exception classes, got {exc_type!r}")

    return HandlerSpec(
        func=func,
        name=getattr(func, "__name__", repr(func)),
        where=where(func),
        sources=sources,
        sinks=sinks,
        input_type=item_type,
        decoder=decoder,
        batch=batch,
        dataframe=dataframe,
        context_param=context_param,
        is_async=inspect.iscoroutinefunction(func),
        batch_size=batch_size,
        batch_wait_ms=batch_wait_ms,
        retry_on=retry_on,
        dlq=dlq,
        output_type=hints.get("return"),
        state=state,
    )


def _state_parameter(
    func: Callable[..., Any],
    rest: list[inspect.Parameter],
    hints: dict[str, Any],
    batch: bool,
    state: StateSpec,
) -> list[inspect.Parameter]:
    """Check a stateful handler's second parameter takes the state; the parameters after it."""
    schema = state.feature_set.schema.__name__
    want = f"(event, state: {schema} | None)"
    if batch:
        raise _fail(func, f"a stateful handler takes one event at a time: {want}")
    if not rest or rest[0].kind is rest[0].KEYWORD_ONLY:
        raise _fail(func, f"a stateful handler takes the entity's state as its second parameter: {want}")
    param = rest[0]
    hint = hints.get(param.name)
    accepted = {state.feature_set.schema, state.feature_set.schema | None}
    if hint not in accepted:
        raise _fail(func, f"parameter '{param.name}' takes the state: annotate it as {schema} | None")
    return rest[1:]
