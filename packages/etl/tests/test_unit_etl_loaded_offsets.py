from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from thimble.etl.history import TableVersion, loaded_offsets


def _version(n: int, source: dict[str, Any]) -> TableVersion:
    return TableVersion(
        n, datetime(2026, 1, 1, tzinfo=UTC), "WRITE", None, None, None, None, None, None, source=source
    )


def test_kafka_ends_are_the_next_offset_and_landed_offsets_the_highest_loaded() -> None:
    versions = [
        _version(2, {"kafka": {"topic": "t", "offsets": {"0": 10, "1": 0}}}),
        _version(1, {"kafka": {"topic": "t", "offsets": {"0": 4, "1": 0}}}),
        _version(0, {"files": ["f"], "kafka_offsets": {"landed": {"0": 5}}}),
    ]
    assert loaded_offsets(versions, 0) == {"landed": {0: 5}}
    assert loaded_offsets(versions, 1) == {"landed": {0: 5}, "t": {0: 3}}
    assert loaded_offsets(versions, 2) == {"landed": {0: 5}, "t": {0: 9}}  # partition 1: nothing read yet


def test_what_is_not_an_offset_is_ignored() -> None:
    versions = [_version(0, {"kafka_offsets": {"t": {"x": 1, "0": "y", "1": None, "2": 3}, "u": None}})]
    assert loaded_offsets(versions, 0) == {"t": {2: 3}}
