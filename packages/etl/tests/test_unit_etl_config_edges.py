"""Config values that would silently switch a gate off, and errors a user can cause: one clear line each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from thimble.common.errors import SparkFailure
from thimble.etl import load_table_config, parse_table_config
from thimble.etl._columns import check_columns
from thimble.etl.errors import ConfigError, SparkJobError
from thimble.etl.quality import evaluate

pytestmark = pytest.mark.unit

BASE = {
    "table": "clients",
    "source": {"type": "files", "path": "/in/clients.json", "format": "json"},
    "schema": {"columns": {"amount": "double"}},
}
BASE_MODEL = parse_table_config(BASE)
NAN = float("nan")


def _problems(**sections: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_table_config({**BASE, **sections})
    return info.value.problems


@pytest.mark.parametrize("bound", ["min", "max"])
def test_a_nan_check_bound_is_refused_not_a_check_that_never_fails(bound: str) -> None:
    # ``.nan`` in YAML: every comparison with it is false, so ``min: .nan`` passed every value.
    quality = {"metrics": [{"metric": "row_count"}], "checks": [{"metric": "row_count", bound: NAN}]}
    assert _problems(quality=quality) == [
        f"quality.checks[0].{bound}: NaN is not a bound (no value compares with it); give a number"
    ]


@pytest.mark.parametrize("value", [NAN, "NaN", " -nan"])
def test_a_nan_range_bound_is_refused(value: object) -> None:
    # Spark orders NaN above every number: ``min: .nan`` quarantined every row, ``max: .nan`` none.
    assert _problems(validate=[{"rule": "range", "column": "amount", "min": 0, "max": value}]) == [
        "validate[0].max: NaN is not a bound (no value compares with it); give a number"
    ]


def test_numbers_and_dates_stay_range_bounds() -> None:
    rule = {"rule": "range", "column": "amount", "min": 0, "max": "2026-12-31"}
    assert parse_table_config({**BASE, "validate": [rule]}).validate_[0].model_dump(
        exclude_defaults=True
    ) == {"rule": "range", "column": "amount", "min": 0.0, "max": "2026-12-31"}


def test_checks_with_number_bounds_still_gate() -> None:
    config = parse_table_config(
        {
            **BASE,
            "quality": {"metrics": [{"metric": "row_count"}], "checks": [{"metric": "row_count", "min": 1}]},
        }
    )
    [result] = evaluate(config.quality.checks, {"row_count": 0.0}, lambda metric, n: [])
    assert result.status == "fail"


@pytest.mark.parametrize(
    "condition",
    ["DELTA_CONCURRENT_APPEND.WITHOUT_HINT", "DELTA_CONCURRENT_TRANSACTION", "DELTA_METADATA_CHANGED"],
)
def test_a_run_that_lost_a_race_says_so_in_one_line(condition: str) -> None:
    reason = f"{condition}: ConcurrentAppendException: Transaction conflict detected. A concurrent MERGE ..."
    error = SparkJobError("test.clients", SparkFailure(reason, condition)).located(
        "tables/clients.yaml", BASE_MODEL
    )
    name = condition.split(".")[0]
    assert str(error) == (
        f"tables/clients.yaml: test.clients: another run changed the table at the same time ({name}), "
        "so this run wrote nothing to it; run it again"
    )
    assert error.concurrent_change == name


def test_other_spark_failures_keep_sparks_reason() -> None:
    failure = SparkFailure("DIVIDE_BY_ZERO: Division by zero.", "DIVIDE_BY_ZERO")
    error = SparkJobError("test.clients", failure)
    assert str(error) == "test.clients: Spark failed, nothing was written: DIVIDE_BY_ZERO: Division by zero."
    assert error.concurrent_change is None


def test_min_and_max_metrics_of_a_string_column_are_refused_before_any_job() -> None:
    # A metric's value is a double: a string's max cast to one failed the run with CAST_INVALID_INPUT.
    config = parse_table_config(
        {
            **BASE,
            "quality": {"metrics": [{"metric": "max", "column": "name"}, {"metric": "min", "column": "at"}]},
        }
    )
    types: dict[str, str | None] = {"name": "string", "at": "timestamp_ntz", "amount": "double"}
    assert check_columns(config, types) == [
        "quality.metrics[0].column: column 'name' is string; max needs a number, date or timestamp"
    ]


@pytest.mark.parametrize(
    ("kind", "problem"),
    [
        ("array<strng>", "unknown type 'strng'; did you mean 'string'?"),
        ("array<int>, `pwned` array<int>", "unexpected ',' after the type"),  # a second column in the DDL
        ("map<string>", "expected ',' before '>'"),
        ("struct<a b:int>", "unknown type 'b'"),
        ("struct<a:>", "a type is missing before '>'"),
        ("array<decimal(10,x)>", "decimal takes decimal(precision) or decimal(precision, scale)"),
        ("decimal(40,2)", "a decimal's precision is 1 to 38, not 40"),
        ("array<decimal(5, 6)>", "a decimal's scale (6) is at most its precision (5)"),
    ],
)
def test_a_nested_type_is_checked_part_by_part_before_spark(kind: str, problem: str, tmp_path: Path) -> None:
    # ``array<anything>`` passed ``check``; the run then failed in Spark's parser, or (a DDL schema of a
    # file or Kafka source) read a column the config never declared.
    file = tmp_path / "clients.yaml"
    file.write_text(yaml.safe_dump({**BASE, "schema": {"columns": {"amount": "double", "tags": kind}}}))
    with pytest.raises(ConfigError) as info:
        load_table_config(file)
    assert info.value.problems == [f"schema.columns.tags: '{kind}' is not a Spark SQL type: {problem}"]
    assert str(file) in str(info.value)


def test_nested_types_spark_prints_still_load() -> None:
    kinds = {
        "a": "array<struct<clientId:bigint, `Sc``ore`:double>>",
        "m": "Map<String, Array<Decimal(10, 2)>>",
        "s": "struct<x: double, y decimal, z: map<string, struct<>>>",
    }
    columns = parse_table_config({**BASE, "schema": {"columns": kinds}}).schema_.columns
    assert columns == {
        "a": "array<struct<clientId:bigint, `Sc``ore`:double>>",
        "m": "map<string, array<decimal(10, 2)>>",
        "s": "struct<x: double, y decimal, z: map<string, struct<>>>",
    }


def test_a_key_given_twice_is_refused_not_the_first_one_dropped(tmp_path: Path) -> None:
    # YAML keeps the last value of a key: a second ``validate:`` silently dropped the first one's rules.
    file = tmp_path / "clients.yaml"
    file.write_text(
        "table: clients\n"
        "source: {type: files, path: /in/clients.json, format: json}\n"
        "validate: [{rule: not_null, columns: [amount]}]\n"
        "quality: {metrics: [{metric: row_count}], metrics: []}\n"
        "defaults: &d {rule: not_null, columns: [amount]}\n"
        "validate: [*d, *d]\n"
    )
    with pytest.raises(ConfigError) as info:
        load_table_config(file)
    assert info.value.problems == [
        "quality.metrics: given twice (line 4, then line 4); YAML would keep only the last",
        "validate: given twice (line 3, then line 6); YAML would keep only the last",
    ]


def test_a_config_nested_too_deeply_is_one_line(tmp_path: Path) -> None:
    file = tmp_path / "deep.yaml"
    file.write_text("table: clients\ndescription: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError) as info:  # was a RecursionError traceback from the YAML parser
        load_table_config(file)
    assert info.value.problems == ["nested too deeply to read"]


def test_a_trailing_window_spark_cannot_take_is_refused() -> None:
    check = {"metric": "row_count", "max_change": 0.5, "over_last": 2**31}
    assert _problems(quality={"metrics": [{"metric": "row_count"}], "checks": [check]}) == [
        "quality.checks[0].over_last: Input should be less than or equal to 2147483647"
    ]


REFUSED_IN_NAMES = [(" ", "a space"), (",", "','"), (";", "';'"), ("{", "'{'"), ("}", "'}'"), ("(", "'('"),
                    (")", "')'"), ("\n", "a newline"), ("\t", "a tab"), ("=", "'='")]  # fmt: skip


@pytest.mark.parametrize(("char", "told"), REFUSED_IN_NAMES)
@pytest.mark.parametrize(
    ("where", "sections"),
    [
        ("schema.columns", lambda n: {"schema": {"columns": {"id": "string", n: "double"}}}),
        ("cleanse[1].columns", lambda n: {"cleanse": [{"step": "trim", "columns": ["amount"]},
                                                      {"step": "rename", "columns": {"amount": n}}]}),
        ("cleanse[0].column", lambda n: {"cleanse": [{"step": "sql", "column": n, "expression": "1"}]}),
        ("cleanse[0].output", lambda n: {"cleanse": [{"step": "parse_timestamp", "column": "amount", "output": n}]}),
    ],
)  # fmt: skip
def test_a_column_name_delta_refuses_is_refused_when_the_file_is_loaded(
    char: str, told: str, where: str, sections: Any, tmp_path: Path
) -> None:
    name = f"bad{char}name"
    file = tmp_path / "clients.yaml"
    file.write_text(yaml.safe_dump({**BASE, **sections(name)}))
    with pytest.raises(ConfigError) as info:
        load_table_config(file)
    message = str(info.value)
    assert message.splitlines() == [
        f"Invalid configuration in {file}:",
        f"  {where}: column name {name!r} holds {told}, which Delta refuses in a column name "
        "(refused: space , ; { } ( ) newline tab =); rename it",
    ]


def test_a_source_name_delta_refuses_may_be_declared_when_it_is_renamed() -> None:
    config = parse_table_config(
        {**BASE, "schema": {"columns": {"first name": "string"}},
         "cleanse": [{"step": "rename", "columns": {"first name": "first_name"}}]}
    )  # fmt: skip
    assert config.schema_.columns == {"first name": "string"}
    # ... and a name renamed back to a refused one is refused where it is given.
    assert _problems(
        schema={"columns": {"a": "string"}},
        cleanse=[{"step": "rename", "columns": {"a": "b"}}, {"step": "rename", "columns": {"b": "c d"}}],
    ) == ["cleanse[1].columns: column name 'c d' holds a space, which Delta refuses in a column name "
          "(refused: space , ; { } ( ) newline tab =); rename it"]  # fmt: skip
