"""A batch handler's records are decoded in one pass, yet each stands alone: checked against decoding
every record on its own, poison (malformed records built to swallow their neighbours if records were
ever joined, invalid ones, tombstones) goes to the dead-letter topic one by one, with its own stage,
and every good record gets its own output, keyed by its own record."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from thimble.consumer import App, TestClient

pytestmark = pytest.mark.unit


class Event(BaseModel):
    id: int
    note: str


class Seen(BaseModel):
    id: int
    note: str


good = st.builds(
    lambda i, note: orjson.dumps({"id": i, "note": note}), st.integers(0, 10**6), st.text(max_size=8)
)
# Each is invalid alone; joined with its neighbours into one JSON array, runs of them parse as valid
# objects (the string in the first swallows the separator and the start of the next).
SWALLOWING = [b'{"id":1,"note":"}', b'{","id":2,"note":"x"}', b'{"id":3,"note":""},{"id":4,"note":""}']
swallowing = st.sampled_from(SWALLOWING)
invalid = st.sampled_from([b"not json", b'{"id":"x","note":"y"}', b"[]", b""])
records = st.lists(st.one_of(good, swallowing, invalid, st.none()), min_size=1, max_size=12)


def reference(raw: bytes | None) -> tuple[str, Event | None]:
    """One record decoded on its own: its outcome, and its event when it is good."""
    if raw is None:
        return "decode", None
    try:
        return "ok", Event.model_validate_json(raw)
    except ValidationError as exc:
        stage = "decode" if any(e["type"] == "json_invalid" for e in exc.errors()) else "validate"
        return stage, None


@settings(max_examples=120, deadline=None)
@given(batch=records)
@example(batch=[b'{"id":0,"note":""}', *SWALLOWING, b'{"id":5,"note":""}'])
def test_a_batch_matches_decoding_each_record_alone(batch: list[bytes | None]) -> None:
    app = App("batch-decoding")

    @app.handler(source="in", sink="out", batch_size=len(batch))
    def copy(events: list[Event]) -> list[Seen]:
        return [Seen(id=e.id, note=e.note) for e in events]

    with TestClient(app) as t:
        for n, raw in enumerate(batch):
            t.send("in", raw, key=str(n))  # bytes are sent as they are, None as a tombstone
        expected = [(str(n).encode(), reference(raw)) for n, raw in enumerate(batch)]
        outputs = [(r.key, orjson.loads(r.value or b"null")) for r in t.records("out")]
        assert outputs == [
            (key, {"id": event.id, "note": event.note}) for key, (stage, event) in expected if event
        ]
        letters = t.dead_letters("in")
        assert [(d.key, d.error_stage) for d in letters] == [
            (key, stage) for key, (stage, event) in expected if event is None
        ]
        assert [d.value for d in letters] == [raw for raw in batch if reference(raw)[1] is None]
