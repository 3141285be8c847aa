"""A/B test arms for new clients: a thimble-consumer app, written as a data scientist would.

    THIMBLE_FLOW_AB_SPLIT="control=50,treatment=50" thimble-consumer run integration.flow.ab_test:app

The arm is a pure function of the experiment and the client id (a SHA-256 bucket in [0, 1) mapped onto
the split), so it is deterministic and the same in every process. It is recorded once per client, at the
client's first event: a client already in the online store keeps the arm it got, even if the split
changes later (sticky). Assignments go to the ``ab-assignments`` topic, the online store and landing files.
"""

from __future__ import annotations

import os
from datetime import datetime

import redis
from pydantic import BaseModel, ConfigDict, Field

from integration.flow.events import CLIENT_ID_PATTERN, names
from thimble.common import experiments
from thimble.common.config import ThimbleSettings, load_settings
from thimble.common.experiments import bucket
from thimble.consumer import App, Landing, OnlineStore, Topic

EXPERIMENT = os.environ.get("THIMBLE_FLOW_AB_EXPERIMENT", "checkout-v2")
SPLIT = os.environ.get("THIMBLE_FLOW_AB_SPLIT", "control=50,treatment=50")

settings = load_settings(ThimbleSettings)
store = redis.Redis.from_url(settings.online_store.url, socket_timeout=10)

app = App("ab-assignment")


def parse_split(text: str) -> list[tuple[str, float]]:
    """``"control=50,treatment=50"`` -> ``[("control", 0.5), ("treatment", 0.5)]`` (weights normalised)."""
    arms: list[tuple[str, float]] = []
    for part in text.split(","):
        name, sep, weight = part.partition("=")
        try:
            value = float(weight)
        except ValueError:
            value = -1.0
        if not sep or not name.strip() or value < 0:
            raise ValueError(f"A/B split {text!r}: write arm=weight pairs, e.g. control=50,treatment=50")
        arms.append((name.strip(), value))
    total = sum(w for _, w in arms)
    if total <= 0 or len({n for n, _ in arms}) != len(arms):
        raise ValueError(f"A/B split {text!r}: arms must be distinct and their weights add up to more than 0")
    return [(name, weight / total) for name, weight in arms]


ARMS = parse_split(SPLIT)


def arm_of(client_id: str, experiment: str = EXPERIMENT, arms: list[tuple[str, float]] = ARMS) -> str:
    """The client's arm under ``arms``."""
    return experiments.arm_of(experiment, client_id, arms)


class SeenClient(BaseModel):
    """All this app needs of an event: who and when."""

    model_config = ConfigDict(extra="ignore")

    client_id: str = Field(pattern=CLIENT_ID_PATTERN)
    event_time: datetime


class Assignment(BaseModel):
    """A client's arm in an experiment, from its first event on."""

    client_id: str
    experiment: str
    arm: str
    bucket: float
    assigned_at: datetime


assigned: set[str] = set()


def _online_key(client_id: str) -> str:
    return f"{settings.online_store.key_prefix}:{names.assignment_set}:{client_id}"


def _already_assigned(client_ids: list[str]) -> set[str]:
    unknown = [c for c in client_ids if c not in assigned]
    if unknown:
        pipe = store.pipeline(transaction=False)
        for client_id in unknown:
            pipe.exists(_online_key(client_id))
        assigned.update(c for c, found in zip(unknown, pipe.execute(), strict=True) if found)
    return {c for c in client_ids if c in assigned}


@app.handler(
    names.events_topic,
    sink=[
        Topic(names.assignments_topic),
        OnlineStore(names.assignment_set, entity_key="client_id", event_time="assigned_at"),
        Landing(names.assignments_dataset, event_time="assigned_at"),
    ],
    batch_size=500,
    dlq=names.assignments_dlq,
)
def assign_arms(events: list[SeenClient]) -> list[Assignment | None]:
    """An assignment for each client's first event; nothing for the others."""
    known = _already_assigned(sorted({e.client_id for e in events}))
    out: list[Assignment | None] = []
    for event in events:
        if event.client_id in known:
            out.append(None)
            continue
        known.add(event.client_id)
        assigned.add(event.client_id)
        point = bucket(EXPERIMENT, event.client_id)
        out.append(Assignment(
            client_id=event.client_id, experiment=EXPERIMENT, arm=arm_of(event.client_id),
            bucket=round(point, 6), assigned_at=event.event_time,
        ))  # fmt: skip
    return out
