"""Client features from the event stream: a thimble-consumer app, written as a data scientist would.

    thimble-consumer run integration.flow.features:app --create-topics

Each event updates its client's running totals; the new feature values go to the online store (Redis,
for serving), the ``client-features`` topic (for other services) and landing files (for the warehouse).
Events that are not JSON or break the event schema are dead-lettered by thimble-consumer with the reason.

Totals live in this process; a client first seen here starts from its values in the online store, so a
restarted consumer carries on where the last one stopped. Events are keyed by client, so one partition
(and one process) owns each client.
"""

from __future__ import annotations

from datetime import timedelta

import orjson
import redis

from integration.flow import events as flow
from integration.flow.events import ClientEvent, ClientFeatures, Order, Rating, Return, Visit, names
from thimble.common.config import ThimbleSettings, load_settings
from thimble.consumer import App, Landing, OnlineStore, Topic

settings = load_settings(ThimbleSettings)
store = redis.Redis.from_url(settings.online_store.url, socket_timeout=10)

app = App("client-features")


totals: dict[str, ClientFeatures] = {}
ONE_MS = timedelta(milliseconds=1)


def _online_key(client_id: str) -> str:
    return flow.client_features.online_key(settings.online_store.key_prefix, client_id)


def _load_unseen(client_ids: set[str]) -> None:
    """Start clients not seen by this process from their latest values in the online store."""
    unseen = sorted(c for c in client_ids if c not in totals)
    if not unseen:
        return
    pipe = store.pipeline(transaction=False)
    for client_id in unseen:
        pipe.hgetall(_online_key(client_id))
    for client_id, stored in zip(unseen, pipe.execute(), strict=True):
        if stored:
            values = {k.decode(): orjson.loads(v) for k, v in stored.items() if not k.startswith(b"_")}
            totals[client_id] = ClientFeatures.model_validate(values)


def update(current: ClientFeatures | None, event: Visit | Order | Return | Rating) -> ClientFeatures:
    """The client's features once ``event`` is counted."""
    if current is None:
        f, event_time = (
            ClientFeatures(client_id=event.client_id, event_time=event.event_time),
            event.event_time,
        )
    else:
        # Strictly increasing per client, so that every snapshot is ordered: the online store (latest event
        # time wins) and the warehouse journal (ordered by event_time) then agree on which one is current.
        f, event_time = current, max(event.event_time, current.event_time + ONE_MS)
    changes: dict[str, object] = {"event_time": event_time}
    if isinstance(event, Visit):
        changes.update(visits=f.visits + 1, last_channel=event.channel)
    elif isinstance(event, Order):
        changes.update(orders=f.orders + 1, total_spent=round(f.total_spent + event.amount, 2))
    elif isinstance(event, Return):
        changes.update(returns=f.returns + 1, total_returned=round(f.total_returned + event.amount, 2))
    else:
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


@app.handler(
    names.events_topic,
    sink=[
        Topic(names.features_topic),
        OnlineStore(flow.client_features),
        Landing(flow.client_features),
    ],
    batch_size=500,
)
def client_features(events: list[ClientEvent]) -> list[ClientFeatures]:
    """One feature snapshot per event."""
    _load_unseen({e.client_id for e in events})
    out = []
    for event in events:
        features = totals[event.client_id] = update(totals.get(event.client_id), event)
        out.append(features)
    return out
