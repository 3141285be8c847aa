"""A feature set for the skew tests, importable by path (``skew_featuresets:CLIENTS``) as a user's would be."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from thimble.common.features import FeatureSet


class SkewClient(BaseModel):
    client_id: str
    event_time: datetime
    orders: int = 0
    spent: float = 0.0
    rating: float | None = None
    channel: str | None = None
    tags: list[str] = []


CLIENTS = FeatureSet("skew-clients", SkewClient, entity_key="client_id", event_time="event_time")
NOT_A_FEATURE_SET = "skew-clients"
