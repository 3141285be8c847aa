from __future__ import annotations

import typing

from thimble.etl.cleanse import keeps_every_row
from thimble.etl.config import CleanseStep, TableConfig, parse_table_config

PER_ROW = [
    {"step": "trim", "columns": ["a"]},
    {"step": "case", "columns": ["a"], "to": "lower"},
    {"step": "cast", "columns": {"b": "int"}},
    {"step": "fill", "values": {"a": "x"}},
    {"step": "parse_timestamp", "column": "d"},
    {"step": "regex_replace", "column": "a", "pattern": "x+"},
    {"step": "rename", "columns": {"a": "c"}},
]
DROPPING = [
    {"step": "drop_where", "condition": "b > 1"},
    {"step": "dedupe", "keys": ["a"], "order_by": "b"},
    {"step": "sql", "column": "e", "expression": "explode(array(1, 2))"},  # a generator makes rows
]


def _steps(steps: list[dict[str, object]]) -> tuple[CleanseStep, ...]:
    config: TableConfig = parse_table_config(
        {"table": "t", "source": {"type": "table", "table": "s"}, "cleanse": steps}
    )
    return tuple(config.cleanse)


def test_steps_that_only_change_values_keep_every_row() -> None:
    assert keeps_every_row(())
    assert keeps_every_row(_steps(PER_ROW))


def test_one_step_that_can_drop_rows_is_enough_to_count_the_rows_read_apart() -> None:
    for step in DROPPING:
        assert not keeps_every_row(_steps([*PER_ROW, step])), step


def test_every_kind_of_cleanse_step_is_classified() -> None:
    kinds = {t.__name__ for t in typing.get_args(typing.get_args(CleanseStep)[0])}
    covered = {type(s).__name__ for s in _steps(PER_ROW + DROPPING)}
    assert kinds == covered  # a new kind of step must be classified here
