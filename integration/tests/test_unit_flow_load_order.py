"""The flow loads the tables that do not read each other at once, and a table after the one it reads."""

from __future__ import annotations

import pytest

from integration.flow.errors import FlowError
from integration.flow.pipeline import TABLES, load_order, table_config
from thimble.etl import TableConfig, parse_table_config

pytestmark = pytest.mark.unit


def _reading(table: str, source: str) -> TableConfig:
    return parse_table_config({"table": table, "source": {"type": "table", "table": source}})


def test_the_current_features_are_loaded_after_the_journal_they_read_and_the_rest_at_once() -> None:
    configs = {table: table_config(table) for table in TABLES}

    assert load_order(configs) == [
        ["client_events", "client_features", "ab_assignments"],
        ["client_features_current"],
    ]


def test_a_chain_of_tables_is_loaded_one_wave_per_link_and_a_cycle_is_refused() -> None:
    chain = {"c": _reading("c", "b"), "b": _reading("b", "a"), "a": _reading("a", "elsewhere")}
    assert load_order(chain) == [["a"], ["b"], ["c"]]

    with pytest.raises(FlowError, match="in a cycle: x, y"):
        load_order({"x": _reading("x", "y"), "y": _reading("y", "x")})
