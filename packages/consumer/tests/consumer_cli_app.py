"""An app run by the CLI in subprocess tests; topics and pacing come from the environment."""

from __future__ import annotations

import os
import time

from pydantic import BaseModel

from thimble.consumer import App, Context

SRC = os.environ.get("THIMBLE_TEST_SRC", "src")
DST = os.environ.get("THIMBLE_TEST_DST", "dst")
SLEEP_S = float(os.environ.get("THIMBLE_TEST_SLEEP_MS", "0")) / 1000


class Event(BaseModel):
    id: int
    poison: bool = False


class Result(BaseModel):
    id: int
    pid: int
    partition: int


app = App("consumer-cli-test")


def handle(event: Event, ctx: Context) -> Result:
    if SLEEP_S:
        time.sleep(SLEEP_S)
    if event.poison:
        raise ValueError(f"poison event {event.id}")
    return Result(id=event.id, pid=os.getpid(), partition=ctx.partition)


def handle_batch(events: list[Event], ctxs: list[Context]) -> list[Result]:
    """The same work as a batch handler (``THIMBLE_TEST_BATCH=1``), shaped like a model scoring batches."""
    return [handle(event, ctx) for event, ctx in zip(events, ctxs, strict=True)]


if os.environ.get("THIMBLE_TEST_BATCH"):
    app.handler(source=SRC, sink=DST, batch_size=500)(handle_batch)
else:
    app.handler(source=SRC, sink=DST)(handle)
