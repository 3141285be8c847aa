"""Outputs the producer would refuse (too large, a key or header of the wrong type): the input is
dead-lettered and the consumer goes on; a dead letter too large to send whole is sent cut."""

from __future__ import annotations

from typing import Any

import pytest

from thimble.consumer import App, Output, TestClient
from thimble.consumer._dead_letters import KEPT_BYTES

pytestmark = pytest.mark.unit

LIMIT = 1_000_000  # the producer's default message.max.bytes, which the harness applies


def output_of(d: dict[str, Any]) -> Any:
    if d.get("big"):
        return {"blob": "x" * (LIMIT + 10)}
    if "key" in d:
        return Output({"id": d["id"]}, key=d["key"])
    if "header" in d:
        return Output({"id": d["id"]}, headers={"h": d["header"]})
    return {"id": d["id"]}


def echo_app() -> App:
    app = App("refused")

    @app.handler(source="in", sink="out")
    def echo(d: dict[str, Any]) -> Any:
        return output_of(d)

    return app


@pytest.mark.parametrize(
    ("event", "error"),
    [
        ({"id": 1, "big": True}, "larger than the producer may send (message.max.bytes"),
        ({"id": 2, "key": {"x": 1}}, "an output key must be str, bytes or int, not dict"),
        ({"id": 3, "key": True}, "an output key must be str, bytes or int, not bool"),
        ({"id": 4, "header": 5}, "output header 'h' must be str, bytes or None, not int"),
    ],
)
def test_an_output_the_producer_would_refuse_dead_letters_its_input(
    event: dict[str, Any], error: str
) -> None:
    with TestClient(echo_app()) as t:
        t.send("in", event, key="k")
        t.send("in", {"id": 99}, key="next")
        [letter] = t.dead_letters("in")
        assert letter.error_stage == "output"
        assert error in letter.error_message
        assert letter.key == b"k"
        assert t.outputs("out") == [{"id": 99}]  # the consumer went on


@pytest.mark.parametrize("wrapped", [False, True])
def test_a_batch_output_too_large_dead_letters_only_its_own_input(wrapped: bool) -> None:
    app = App("refused-batch")

    @app.handler(source="in", sink="out", batch_size=3)
    def echo(ds: list[dict[str, Any]]) -> list[Any]:
        return [Output(output_of(d)) if wrapped else output_of(d) for d in ds]

    with TestClient(app) as t:
        for i, event in enumerate([{"id": 1}, {"id": 2, "big": True}, {"id": 3}]):
            t.send("in", event, key=str(i))
        [letter] = t.dead_letters("in")
        assert (letter.key, letter.original_offset, letter.error_stage) == (b"1", 1, "output")
        assert t.outputs("out") == [{"id": 1}, {"id": 3}]


def test_good_header_values_and_keys_pass_as_they_are() -> None:
    with TestClient(echo_app()) as t:
        t.send("in", {"id": 1, "header": "text"})
        t.send("in", {"id": 2, "key": 7})
        first, second = t.records("out")
        assert first.headers == {"h": b"text"}
        assert second.key == b"7"
        assert t.dead_letters() == []


def test_a_dead_letter_too_large_to_send_whole_is_sent_cut_and_says_so() -> None:
    app = App("strict")

    @app.handler(source="in", sink="out")
    def strict(d: dict[str, int]) -> dict[str, int]:
        return d

    value = b"{" + b"x" * (LIMIT - 100)  # fits the producer alone, not with the dead-letter headers
    with TestClient(app) as t:
        t.send("in", value, key="big", headers={"trace": "abc"})
        t.send("in", {"id": 1})
        [letter] = t.dead_letters("in")
        assert letter.cut
        assert letter.value == value[:KEPT_BYTES]
        assert letter.headers["thimble.value.cut"] == str(len(value)).encode()
        assert letter.headers["trace"] == b"abc"
        assert (letter.key, letter.error_stage, letter.original_offset) == (b"big", "decode", 0)
        assert t.outputs("out") == [{"id": 1}]


def test_a_dead_letter_that_fits_without_its_traceback_keeps_its_value_whole() -> None:
    app = App("strict")

    @app.handler(source="in", sink="out")
    def strict(d: dict[str, int]) -> dict[str, int]:
        return d

    with TestClient(app) as t:
        probe = b"{"
        t.send("in", probe)
        [small] = t.dead_letters("in")
        headers = sum(len(k) + len(v or b"") for k, v in small.headers.items())
        traceback = len(small.headers["thimble.error.traceback"] or b"")
        # Too large by a few bytes with its traceback, small enough without it.
        value = b"{" + b"x" * (LIMIT - headers - 1 - 1 + 10)
        assert len(value) + headers > LIMIT > len(value) + headers - traceback
        t.send("in", value)
        letter = t.dead_letters("in")[-1]
        assert not letter.cut
        assert letter.value == value
        assert "thimble.error.traceback" not in letter.headers


def test_an_exception_in_place_of_a_batch_item_dead_letters_that_input_alone() -> None:
    from pydantic import TypeAdapter, ValidationError

    from thimble.consumer import DecodeError

    app = App("items")
    ints = TypeAdapter(int)

    @app.handler(source="in", sink="out", batch_size=4)
    def score(ds: list[dict[str, Any]]) -> list[Any]:
        items: list[Any] = []
        for d in ds:
            try:
                items.append({"id": ints.validate_python(d["id"], strict=True)})
            except ValidationError as exc:
                items.append(exc)
            except KeyError:
                items.append(DecodeError("no id"))
        items[2] = ValueError("the model failed on this row") if items[2] else items[2]
        return items

    with TestClient(app) as t:
        for i, event in enumerate([{"id": 0}, {"id": "1"}, {"id": 2}, {"other": 3}]):
            t.send("in", event, key=str(i))
        letters = {d.key: d for d in t.dead_letters("in")}
        assert {k: d.error_stage for k, d in letters.items()} == {
            b"1": "validate",
            b"2": "handler",
            b"3": "decode",
        }
        assert letters[b"2"].error_message == "the model failed on this row"
        assert t.outputs("out") == [{"id": 0}]
        assert [r.key for r in t.records("out")] == [b"0"]


@pytest.mark.parametrize("shape", [tuple, list])
def test_exceptions_in_a_tuple_or_an_unpaired_result_dead_letter_with_the_handlers_error(shape: Any) -> None:
    app = App("shapes")

    @app.handler(source="in", sink="out", batch_size=3)
    def score(ds: list[dict[str, Any]]) -> Any:
        paired = [ValueError("row failed") if d["id"] == 1 else {"id": d["id"]} for d in ds]
        if shape is tuple:
            return tuple(paired)
        return [*paired, {"id": 99}]  # one item more than inputs: not paired with them

    with TestClient(app) as t:
        for i in range(3):
            t.send("in", {"id": i}, key=str(i))
        letters = t.dead_letters("in")
        if shape is tuple:  # the failed row alone, the others go on with their keys
            assert [(d.key, d.error_stage, d.error_message) for d in letters] == [
                (b"1", "handler", "row failed")
            ]
            assert [(r.key, r.json()) for r in t.records("out")] == [(b"0", {"id": 0}), (b"2", {"id": 2})]
        else:  # whose the error is cannot be told: the whole batch, with that error, and no output
            assert [(d.key, d.error_stage, d.error_message) for d in letters] == [
                (str(i).encode(), "handler", "row failed") for i in range(3)
            ]
            assert t.outputs("out") == []


def test_a_dead_letter_is_cut_further_to_fit_a_small_producer_limit() -> None:
    app = App("strict")

    @app.handler(source="in", sink="out")
    def strict(d: dict[str, int]) -> dict[str, int]:
        return d

    value = b"{" + b"x" * 12_000  # under 16 KiB: the first cut leaves it whole
    with TestClient(app) as t:
        t.transport.max_bytes = 10_000  # as producer_extra's message.max.bytes would set it
        t.send("in", value, key="k", headers={"big": b"h" * 5_000})
        t.send("in", {"id": 1})
        [letter] = t.dead_letters("in")
        assert letter.value == value[:1024]
        assert letter.headers["thimble.value.cut"] == str(len(value)).encode()
        assert letter.headers["thimble.headers.dropped"] == b"1"
        assert letter.cut
        assert t.outputs("out") == [{"id": 1}]


@pytest.mark.parametrize("sink", ["topic", "online store"])
def test_a_batch_output_a_sink_refuses_dead_letters_only_its_own_input(sink: str) -> None:
    from thimble.consumer import OnlineStore

    app = App("refused-items")
    target: Any = "out" if sink == "topic" else OnlineStore("fs", entity_key="id")

    @app.handler(source="in", sink=target, batch_size=4)
    def echo(ds: list[dict[str, Any]]) -> list[Any]:
        items: list[Any] = []
        for d in ds:
            if d["id"] == 1:  # a header the producer cannot take, a field of the store's own
                items.append(Output(d, headers={"h": 5}) if sink == "topic" else {**d, "_version": 1})
            elif d["id"] == 2:
                items.append({"id": 2, "bad": {1, 2}})  # not JSON
            else:
                items.append(Output(d) if sink == "topic" else d)
        return items

    with TestClient(app) as t:
        for i in range(4):
            t.send("in", {"id": i}, key=str(i))
        dead = {d.key: d.error_stage for d in t.dead_letters("in")}
        assert dead == {b"1": "output", b"2": "output"}
        if sink == "topic":
            assert t.outputs("out") == [{"id": 0}, {"id": 3}]
        else:
            assert [t.online("fs", i) is not None for i in range(4)] == [True, False, False, True]


def test_plain_batch_outputs_one_of_which_does_not_encode_dead_letter_only_that_input() -> None:
    app = App("plain-items")

    @app.handler(source="in", sink="out", batch_size=3)
    def echo(ds: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"id": d["id"], "bad": {1}} if d["id"] == 1 else {"id": d["id"]} for d in ds]

    with TestClient(app) as t:
        for i in range(3):
            t.send("in", {"id": i}, key=str(i))
        assert [(d.key, d.error_stage) for d in t.dead_letters("in")] == [(b"1", "output")]
        assert t.outputs("out") == [{"id": 0}, {"id": 2}]
