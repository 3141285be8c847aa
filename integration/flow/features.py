"""Client features from the event stream: a thimble-consumer app, written as a data scientist would.

    thimble-consumer run integration.flow.features:app --create-topics

Each event updates its client's features: ``update`` gets the client's current features and returns the
new ones. They are the client's state in the online store (Redis, for serving), which thimble-consumer
reads and writes for the handler and which also records the events applied, so a redelivered event counts
once; each new snapshot also goes to the ``client-features`` topic (for other services) and to landing
files (for the warehouse). Events that are not JSON or break the event schema are dead-lettered by
thimble-consumer with the reason.
"""

from __future__ import annotations

from integration.flow import events as flow
from integration.flow.events import ClientEvent, ClientFeatures, Order, Rating, Return, Visit, names
from thimble.consumer import App, Landing, Topic

app = App("client-features")


@app.stateful(
    names.events_topic,
    state=flow.client_features,
    sink=[Topic(names.features_topic), Landing(flow.client_features)],
)
def update(event: ClientEvent, current: ClientFeatures | None) -> ClientFeatures:
    """The client's features once ``event`` is counted (thimble-consumer keeps each client's event times
    strictly increasing, so the online store and the warehouse journal agree on the current snapshot)."""
    f = current or ClientFeatures(client_id=event.client_id, event_time=event.event_time)
    changes: dict[str, object] = {"event_time": event.event_time}
    if isinstance(event, Visit):
        changes.update(visits=f.visits + 1, last_channel=event.channel)
    elif isinstance(event, Order):
        changes.update(orders=f.orders + 1, total_spent=round(f.total_spent + event.amount, 2))
    elif isinstance(event, Return):
        changes.update(returns=f.returns + 1, total_returned=round(f.total_returned + event.amount, 2))
    elif isinstance(event, Rating):
        mean = f.avg_rating or 0.0
        changes.update(
            ratings=f.ratings + 1, avg_rating=round((mean * f.ratings + event.stars) / (f.ratings + 1), 4)
        )
    f = f.model_copy(update=changes)
    spent = f.total_spent
    return f.model_copy(
        update={
            "avg_order_value": round(spent / f.orders, 2) if f.orders else 0.0,
            "return_rate": round(min(f.total_returned / spent, 1.0), 4) if spent else 0.0,
        }
    )
