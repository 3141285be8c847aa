"""Poison rows a stream meets: each is dead-lettered alone, with its reason, and its batch goes on."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from thimble.consumer import TestClient
from thimble.modelops import ModelContext, Registry, model
from thimble.modelops.stream import stream_app

pytestmark = pytest.mark.unit


class Reading(BaseModel):
    client_id: int
    tag: str = ""


class Packed(BaseModel):
    raw: bytes


@model(name="packer")
def packer(ctx: ModelContext, rows: list[Reading]) -> list[Packed]:
    """Packs the tag as bytes; a tag "binary" gives bytes that are not UTF-8, so not JSON."""
    return [Packed(raw=b"\xff\xfe" if r.tag == "binary" else r.tag.encode()) for r in rows]


@pytest.fixture
def packer_registry(registry: Registry) -> Registry:
    registry.save(packer, sample=[{"client_id": 0, "tag": "a"}], pickle_function=True)
    return registry


def nested(depth: int) -> bytes:
    return b'{"client_id": 2, "extra": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize("depth", [300, 1000], ids=["past-the-encoder-limit", "past-the-recursion-limit"])
def test_a_deeply_nested_row_is_dead_lettered_alone(packer_registry: Registry, depth: int) -> None:
    app = stream_app(packer_registry.load("packer"), "readings", "packed", batch_size=10)
    with TestClient(app) as t:
        t.send("readings", {"client_id": 1, "tag": "a"}, key="before")
        t.send("readings", nested(depth), key="deep")
        t.send("readings", {"client_id": 3, "tag": "b"}, key="after")
        t.flush()
        outputs = {r.key: r.json() for r in t.records("packed")}
        dead = {d.key: d for d in t.dead_letters("readings")}
    assert set(outputs) == {b"before", b"after"}
    assert list(dead) == [b"deep"]
    assert dead[b"deep"].error_stage == "decode"
    assert "nested more than 254 levels" in dead[b"deep"].error_message
    assert dead[b"deep"].value == nested(depth)


def test_an_output_that_is_not_json_dead_letters_its_row_alone(packer_registry: Registry) -> None:
    app = stream_app(packer_registry.load("packer"), "readings", "packed", batch_size=10)
    with TestClient(app) as t:
        for key, tag in [("ok-1", "a"), ("binary", "binary"), ("ok-2", "b")]:
            t.send("readings", {"client_id": 1, "tag": tag}, key=key)
        t.flush()
        outputs = {r.key: r.json() for r in t.records("packed")}
        dead = {d.key: d for d in t.dead_letters("readings")}
    assert {k: v["raw"] for k, v in outputs.items()} == {b"ok-1": "a", b"ok-2": "b"}
    assert list(dead) == [b"binary"]
    assert dead[b"binary"].error_stage == "handler"
    assert "model packer@1 returned an output that is not JSON" in dead[b"binary"].error_message


def test_a_tombstone_is_dead_lettered_as_one(packer_registry: Registry) -> None:
    app = stream_app(packer_registry.load("packer"), "readings", "packed", batch_size=10)
    with TestClient(app) as t:
        t.send("readings", None, key="gone")
        t.send("readings", {"client_id": 1, "tag": "a"}, key="ok")
        t.flush()
        outputs = [r.key for r in t.records("packed")]
        dead = {d.key: d for d in t.dead_letters("readings")}
    assert outputs == [b"ok"]
    assert dead[b"gone"].error_stage == "decode"
    assert dead[b"gone"].error_message == "no value (a tombstone or an empty record), not a row"


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text")


@model(name="fragile")
def fragile(ctx: ModelContext, rows: list[Reading]) -> list[Packed]:
    """Fails on tag "unprintable" with an error whose text cannot be read, on "long" with a huge one."""
    if any(r.tag == "unprintable" for r in rows):
        raise Unprintable
    if any(r.tag == "long" for r in rows):
        raise ValueError("y" * 100_000)
    return [Packed(raw=r.tag.encode()) for r in rows]


def test_a_row_the_model_fails_on_with_an_unreadable_error_is_dead_lettered_alone(
    registry: Registry,
) -> None:
    registry.save(fragile, sample=[{"client_id": 0, "tag": "a"}], pickle_function=True)
    app = stream_app(registry.load("fragile"), "readings", "packed", batch_size=10)
    with TestClient(app) as t:
        for key, tag in [("ok-1", "a"), ("unprintable", "unprintable"), ("long", "long"), ("ok-2", "b")]:
            t.send("readings", {"client_id": 1, "tag": tag}, key=key)
        t.flush()
        outputs = [r.key for r in t.records("packed")]
        dead = {d.key: d for d in t.dead_letters("readings")}
    assert outputs == [b"ok-1", b"ok-2"]
    assert sorted(dead) == [b"long", b"unprintable"]
    assert "raised Unprintable: (its text cannot be shown" in dead[b"unprintable"].error_message
    assert dead[b"long"].error_message.startswith("model fragile@1 raised ValueError: yyy")
