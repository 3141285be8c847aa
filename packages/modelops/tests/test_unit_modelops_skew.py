from __future__ import annotations

import math
from datetime import UTC, date, datetime
from typing import Any

import pytest

from thimble.modelops._skew_sides import glob_escape
from thimble.modelops.skew import FieldMismatch, SkewReport, SkewTarget, render, same_value

T = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
T_MS = int(T.timestamp() * 1000)


@pytest.mark.parametrize(
    ("online", "warehouse", "same"),
    [
        (None, None, True),
        (None, math.nan, True),
        (None, 0.0, False),
        (0, None, False),
        (1.0, 1.0 + 1e-12, True),
        (1.0, 1.001, False),
        (0.0, 1e-12, True),
        (3, 3.0, True),
        (True, True, True),
        (True, 1, False),
        (1, True, False),
        ("2026-03-01T12:30:00", T, True),
        ("2026-03-01T12:30:00+00:00", T, True),
        ("2026-03-01T12:30:00.001", T, False),
        (T_MS, T, True),
        ("2026-03-01", date(2026, 3, 1), True),
        ("not a time", T, False),
        (["a", "b"], '["a","b"]', True),
        ({"k": 1}, '{"k": 1}', True),
        ({"k": 1}, '{"k": 2}', False),
        ([1.0, 2.0], [1.0, 2.0 + 1e-12], True),
        ({"a": 1}, {"a": 1.0}, True),
        ("web", "web", True),
        ("web", "app", False),
    ],
)
def test_values_compare_across_the_two_encodings(online: Any, warehouse: Any, same: bool) -> None:
    assert same_value(online, warehouse) is same


def test_a_redis_pattern_matches_the_prefix_literally() -> None:
    assert glob_escape("p*[x]?-\\:fs:") == "p\\*\\[x\\]\\?\\-\\\\:fs:"


def test_a_feature_set_by_name_refuses_names_that_would_leave_the_table_grammar() -> None:
    from thimble.modelops.errors import ModelOpsError

    assert SkewTarget.named("client-features", "wh", "client_id", "event_time").table == "wh.client_features"
    assert SkewTarget.named("x", "wh", "id", "t", table="db.t").table == "db.t"
    for table in ("a.b.c", "t; drop", "`t`", "1t"):
        with pytest.raises(ModelOpsError, match="not a valid table name"):
            SkewTarget.named("x", "wh", "id", "t", table=table)
    with pytest.raises(ModelOpsError, match="not a valid column name"):
        SkewTarget.named("x", "wh", "id`x", "t")


def test_values_and_keys_from_the_stores_are_shown_cut_and_escaped() -> None:
    from rich.console import Console

    hostile = "evil\u202e\x9b[2J" + "x" * 500
    report = SkewReport("fs", "t", None, 1, 0, mismatches=[FieldMismatch(hostile, "f\x1b", hostile, "w")])
    console = Console(width=400, record=True, color_system=None)
    for renderable in render(report):
        console.print(renderable)
    text = console.export_text()
    assert not any(c in text for c in "\u202e\x9b\x1b")
    assert "\\u202e" in text
    assert '"evil\\u202e\\x9b[2J' + "x" * 70 + "… " in text  # the value: 80 characters of its JSON
