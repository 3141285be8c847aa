"""Random multi-day histories through the real journal (Spark + Delta), compared with the plain-Python
reference after every day. ``THIMBLE_JOURNAL_SCALE=N`` runs more and bigger histories."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from pyspark.sql import SparkSession

from thimble.common.config import ThimbleSettings
from thimble.etl import RunResult, run_table, table_version
from thimble.testing import in_process_pass

from .conftest import config
from .journal_histories import SCALE, START, WORKED_HISTORY, histories, snapshots, source_rows
from .journal_reference import INVALID_RULE, NULL_KEY_RULE, Journal, Outcome, Row, check_invariants

pytestmark = [pytest.mark.integration, pytest.mark.slow, in_process_pass]


def _config(table: str, path: str, *, ordered: bool = True) -> Any:
    journal: dict[str, Any] = {
        "keys": ["id"],
        "track": ["segment"],
        "deletes": "close",
        "max_close_share": 1.0,
    }
    if ordered:
        journal["order_by"] = "at"
    return config(
        table=table,
        source={"type": "files", "path": path, "format": "json"},
        schema_={"columns": {"id": "string", "segment": "string", "score": "double", "at": "timestamp"}},
        validate_=[{"rule": "range", "column": "score", "min": 0}],
        journal=journal,
        write={"mode": "journal"},
    )


def _expected_quarantine(batch: list[Row], reference: Counter[str]) -> Counter[str]:
    """Quarantine per list of failed rules, as the run records it (a row may fail two rules)."""
    out: Counter[str] = Counter()
    for row in batch:
        rules = ([] if row.valid else [INVALID_RULE]) + ([NULL_KEY_RULE] if row.key is None else [])
        if rules:
            out[" & ".join(rules)] += 1
    out.update({rule: n for rule, n in reference.items() if rule not in (INVALID_RULE, NULL_KEY_RULE)})
    return out


def _table_rows(spark: SparkSession, name: str) -> list[tuple[Any, ...]]:
    return [
        (r.id, r.segment, r.valid_from, r.valid_to, r.is_current)
        for r in spark.table(name).orderBy("id", "valid_from").collect()
    ]


def _quarantine(spark: SparkSession, name: str, run_id: str) -> Counter[str]:
    if not spark.catalog.tableExists(f"{name}_quarantine"):
        return Counter()
    rows = spark.table(f"{name}_quarantine").filter(f"run_id = '{run_id}'").collect()
    return Counter(" & ".join(r.failed_rules) for r in rows)


def _assert_day(
    spark: SparkSession,
    name: str,
    day: int,
    result: RunResult,
    reference: Journal,
    expected: Outcome,
    quarantined: Counter[str],
) -> None:
    """The table, the run's counts and its quarantine after ``day`` are the reference's."""
    if result.version is None:
        assert reference.rows() == [], f"day {day}: no table, but the reference has versions"
        return
    rows = _table_rows(spark, name)
    assert rows == reference.rows(), f"day {day}"
    check_invariants(rows, reference.deletions)
    assert (result.inserted, result.updated, result.closed) == (
        expected.inserted,
        expected.updated,
        expected.closed,
    ), f"day {day}"
    assert _quarantine(spark, name, result.run_id) == quarantined, f"day {day}"


RANDOM_HISTORIES = settings(
    max_examples=2 * SCALE,
    deadline=None,
    # A failing history is reported as generated: shrinking it would take a Spark run per step.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.timeout(1800)
@RANDOM_HISTORIES
@given(history=histories())
@example(history=WORKED_HISTORY)
def test_the_journal_matches_the_reference_day_after_day(
    spark: SparkSession,
    spark_settings: ThimbleSettings,
    json_source: Callable[[list[dict[str, Any]]], str],
    history: list[list[Row]],
) -> None:
    table = f"t_{uuid.uuid4().hex[:10]}"
    name = f"{spark_settings.warehouse.database}.{table}"
    cfg = None
    result = None
    for day, batch in enumerate(history):
        cfg = _config(table, json_source(source_rows(batch)))
        result = run_table(cfg, spark=spark, settings=spark_settings)
        # Loading the days one by one (a run a day) gives what the reference gets replaying them from scratch.
        reference = Journal()
        for earlier in history[:day]:
            reference.load(earlier)
        expected = reference.load(batch)
        _assert_day(
            spark, name, day, result, reference, expected, _expected_quarantine(batch, expected.quarantined)
        )

    # A re-run of the last day changes nothing: no version, and the same rows quarantined for the same reasons.
    assert cfg is not None
    assert result is not None
    if result.version is None:
        return
    version = table_version(table, spark=spark, settings=spark_settings)
    rows = _table_rows(spark, name)
    again = run_table(cfg, spark=spark, settings=spark_settings)
    assert again.status == "unchanged"
    assert table_version(table, spark=spark, settings=spark_settings) == version
    assert _table_rows(spark, name) == rows
    assert _quarantine(spark, name, again.run_id) == _quarantine(spark, name, result.run_id)


@pytest.mark.timeout(1800)
@RANDOM_HISTORIES
@given(history=snapshots())
@example(
    history=[
        [Row("a", "A", START), Row("b", "A", START), Row("c", "A", START)],
        # a changes; b is gone; c fails validation (kept); d is new; e twice (both quarantined).
        [Row("a", "B", START), Row("c", "B", START, valid=False), Row("d", "A", START),
         Row("e", "A", START), Row("e", "B", START)],
        [Row("a", "B", START), Row(None, "A", START)],  # a null key: nothing is closed
        [Row("b", "A", START)],  # b comes back; a, c and d are gone
        [],  # an empty snapshot closes every key (max_close_share: 1.0)
    ]
)  # fmt: skip
def test_the_journal_without_order_by_matches_the_reference(
    spark: SparkSession,
    spark_settings: ThimbleSettings,
    json_source: Callable[[list[dict[str, Any]]], str],
    history: list[list[Row]],
) -> None:
    """Every version starts at its run's time (read back from the metrics table)."""
    table = f"t_{uuid.uuid4().hex[:10]}"
    name = f"{spark_settings.warehouse.database}.{table}"
    reference = Journal()
    for day, batch in enumerate(history):
        result = run_table(
            _config(table, json_source(source_rows(batch)), ordered=False),
            spark=spark,
            settings=spark_settings,
        )
        run_at = (
            spark.table(f"{spark_settings.warehouse.database}.thimble_quality")
            .filter(f"run_id = '{result.run_id}'")
            .first()["run_at"]  # type: ignore[index]
        )
        expected = reference.load_unordered(batch, run_at)
        _assert_day(spark, name, day, result, reference, expected, expected.quarantined)
