"""The client events on the ``client-events`` topic, the client features made from them, and the names
the whole flow shares.

Every event is one JSON object keyed by ``client_id`` on Kafka. ``event_type`` says which fields it has.
Topic and landing names come from the environment so that tests can run beside the demo.
:data:`client_features` is the one definition of the features that the consumer writes, the warehouse
journals and the model reads.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from thimble.common.features import FeatureSet

CLIENT_ID_PATTERN = r"^c\d{5,}$"


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: str = Field(min_length=1)
    client_id: str = Field(pattern=CLIENT_ID_PATTERN)
    event_time: datetime


class Visit(_Event):
    """A client looked at the shop."""

    event_type: Literal["visit"]
    page: str = Field(min_length=1)
    duration_s: float = Field(ge=0, le=86_400)
    channel: Literal["web", "app", "email", "ads"]


class Order(_Event):
    """A client bought something."""

    event_type: Literal["order"]
    order_id: str = Field(min_length=1)
    amount: float = Field(gt=0, le=100_000)
    items: int = Field(ge=1, le=1_000)


class Return(_Event):
    """A client sent (part of) an order back."""

    event_type: Literal["return"]
    order_id: str = Field(min_length=1)
    amount: float = Field(gt=0, le=100_000)


class Rating(_Event):
    """A client rated an order, one to five stars."""

    event_type: Literal["rating"]
    order_id: str = Field(min_length=1)
    stars: int = Field(ge=1, le=5)


ClientEvent = Annotated[Visit | Order | Return | Rating, Field(discriminator="event_type")]
EVENT_TYPES = ("visit", "order", "return", "rating")


def _name(variable: str, default: str) -> str:
    return os.environ.get(variable) or default


class Names:
    """Topics, feature sets and landing datasets of the flow (``THIMBLE_FLOW_*`` overrides each)."""

    @property
    def events_topic(self) -> str:
        return _name("THIMBLE_FLOW_EVENTS_TOPIC", "client-events")

    @property
    def features_topic(self) -> str:
        return _name("THIMBLE_FLOW_FEATURES_TOPIC", "client-features")

    @property
    def assignments_topic(self) -> str:
        return _name("THIMBLE_FLOW_ASSIGNMENTS_TOPIC", "ab-assignments")

    @property
    def predictions_topic(self) -> str:
        """Where the model server logs every prediction it serves."""
        return _name("THIMBLE_FLOW_PREDICTIONS_TOPIC", "return-risk-predictions")

    @property
    def features_dlq(self) -> str:
        return f"{self.events_topic}.dlq"

    @property
    def assignments_dlq(self) -> str:
        return f"{self.events_topic}.ab.dlq"

    feature_set = "client-features"
    assignment_set = "ab-assignment"
    features_dataset = "client_features"
    assignments_dataset = "ab_assignments"


names = Names()


class ClientFeatures(BaseModel):
    """A client's features after one of its events (``event_time``: that event's time, moved 1 ms past the
    previous snapshot's when it is not later)."""

    client_id: str
    event_time: datetime
    visits: int = 0
    orders: int = 0
    returns: int = 0
    ratings: int = 0
    total_spent: float = 0.0
    total_returned: float = 0.0
    avg_order_value: float = 0.0
    return_rate: float = 0.0
    avg_rating: float | None = None
    last_channel: str | None = None


client_features = FeatureSet(
    names.feature_set,
    ClientFeatures,
    entity_key="client_id",
    event_time="event_time",
    dataset=names.features_dataset,
)
"""Online at ``{key_prefix}:client-features:<client_id>``, landed as ``client_features``, journalized in
the ``client_features`` table."""
