"""Handler signatures: what is accepted, and errors that point at the user's function."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from thimble.consumer import App, Context, HandlerSignatureError, OnlineStore

pytestmark = pytest.mark.unit


class Event(BaseModel):
    id: int


def _register(func: Any, **kw: Any) -> Any:
    app = App("sig")
    app.handler(source="in", sink="out", **kw)(func)
    return app.handlers[0]


def test_accepted_signatures() -> None:
    def single(e: Event, ctx: Context) -> None: ...
    def batch(es: list[Event], ctxs: list[Context]) -> None: ...
    def raw(b: bytes, extra: int = 1) -> None: ...
    async def aio(d: dict[str, Any]) -> None: ...

    assert _register(single).context_param == "ctx"
    spec = _register(batch, batch_size=10)
    assert spec.batch
    assert spec.input_model is Event
    assert spec.batch_size == 10
    assert _register(raw).input_type is bytes
    assert _register(aio).is_async


@pytest.mark.parametrize(
    ("func_src", "kw", "needle"),
    [
        ("def f(): ...", {}, "takes no parameter"),
        ("def f(x): ...", {}, "parameter 'x' has no type annotation"),
        ("def f(x: Event, y): ...", {}, "parameter 'y' has no default and is not typed Context"),
        ("def f(*xs: Event): ...", {}, "'*xs' is not supported"),
        ("def f(c: Context, e: Event): ...", {}, "put the Context parameter after it"),
        ("def f(e: Event, c: list[Context]): ...", {}, "a single-message handler takes Context"),
        ("def f(e: list[Event], c: Context): ...", {}, "a batch handler takes list[Context]"),
        ("def f(e: Event): ...", {"batch_size": 5}, "apply to batch handlers"),
        ("def f(e: list[list[Event]]): ...", {}, "nested lists"),
        ("def f(e: 'Missing'): ...", {}, "cannot resolve its type hints"),
        ("def f(e: Event): ...", {"retry_on": (42,)}, "retry_on must hold exception classes"),
    ],
)
def test_bad_signatures_name_the_function_and_line(func_src: str, kw: dict[str, Any], needle: str) -> None:
    namespace: dict[str, Any] = {"Event": Event, "Context": Context}
    exec(compile(func_src, "user_handlers.py", "exec"), namespace)
    with pytest.raises(HandlerSignatureError) as info:
        _register(namespace["f"], **kw)
    assert needle in str(info.value)
    assert "f (user_handlers.py:1)" in str(info.value)


def test_one_handler_per_source_and_no_loops() -> None:
    app = App("dup")

    @app.handler(source="in", sink="out")
    def first(e: Event) -> None: ...

    def second(e: Event) -> None: ...

    with pytest.raises(HandlerSignatureError, match=r"already handled by .*first"):
        app.handler(source="in")(second)
    with pytest.raises(HandlerSignatureError, match="also its source"):

        @app.handler(source="loop", sink="loop")
        def loop(e: Event) -> None: ...


def test_bad_sink_and_source() -> None:
    app = App("bad")
    with pytest.raises(HandlerSignatureError, match="sink must be a topic name"):

        @app.handler(source="in", sink=[3])  # type: ignore[list-item]
        def f(e: Event) -> None: ...

    with pytest.raises(HandlerSignatureError, match="source must be"):

        @app.handler(source=[])
        def g(e: Event) -> None: ...

    def h(e: Event) -> None: ...

    assert App("ok").handler(source="a", sink=OnlineStore("fs", entity_key="id"))(h) is h


def test_app_requires_a_name() -> None:
    with pytest.raises(HandlerSignatureError, match="non-empty name"):
        App("")
