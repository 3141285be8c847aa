from __future__ import annotations

from pathlib import Path

import pytest

from thimble.etl import load_table_config, parse_table_config
from thimble.etl._columns import check_columns
from thimble.etl.config import KafkaSource
from thimble.etl.errors import ConfigError

pytestmark = pytest.mark.unit

BASE = {
    "table": "client_features",
    "source": {"type": "landing", "dataset": "client-events"},
    "schema": {"columns": {"client_id": "string", "amount": "double", "event_time": "timestamp"}},
}


def problems(data: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_table_config(data)
    return info.value.problems


def test_valid_config_loads_with_defaults() -> None:
    cfg = parse_table_config({**BASE, "journal": {"keys": ["client_id"]}, "write": {"mode": "journal"}})
    assert cfg.write.mode == "journal"
    assert cfg.keys == ["client_id"]
    assert len(cfg.config_hash()) == 16


def test_unknown_keys_steps_and_rules_get_did_you_mean() -> None:
    found = problems(
        {
            **BASE,
            "sorce_extra": 1,
            "cleanse": [
                {"step": "trimm", "columns": ["client_id"]},
                {"step": "case", "colums": ["x"], "to": "lower"},
            ],
            "validate": [{"rule": "not_nul", "columns": ["client_id"]}],
        }
    )
    assert "sorce_extra: unknown key" in found
    assert any(p.startswith("cleanse[0].step: unknown step 'trimm'; did you mean 'trim'?") for p in found)
    assert "cleanse[1].colums: unknown key; did you mean 'columns'?" in found
    assert "cleanse[1].columns: required" in found
    assert any(
        p.startswith("validate[0].rule: unknown rule 'not_nul'; did you mean 'not_null'?") for p in found
    )


def test_cross_field_problems() -> None:
    found = problems({**BASE, "quality": {"checks": [{"metric": "row_count"}]}})
    assert any("quality.checks[0]: give 'min', 'max' or 'max_change'" in p for p in found)
    found = problems({**BASE, "write": {"mode": "journal"}})
    assert any("write.mode is 'journal' but there is no 'journal' section" in p for p in found)


def test_bad_types_and_regex() -> None:
    found = problems(
        {
            **BASE,
            "schema": {"columns": {"a": "strng"}},
            "cleanse": [{"step": "regex_replace", "column": "a", "pattern": "(", "replacement": ""}],
        }
    )
    assert any(p.startswith("schema.columns.a: unknown type 'strng'; did you mean 'string'?") for p in found)
    assert any(p.startswith("cleanse[0].pattern: not a valid regular expression") for p in found)


def test_columns_checked_with_did_you_mean() -> None:
    cfg = parse_table_config(
        {
            **BASE,
            "cleanse": [{"step": "rename", "columns": {"amount": "total"}}],
            "validate": [{"rule": "regex", "column": "total", "pattern": "x"}],
            "quality": {"metrics": [{"metric": "mean", "column": "amount"}]},
            "journal": {"keys": ["clientid"], "order_by": "event_time"},
            "write": {"mode": "journal"},
        }
    )
    found = check_columns(cfg, dict(cfg.schema_.columns or {}))
    assert (
        "journal.keys[0]: no column 'clientid' at this point (after cleanse); did you mean 'client_id'?"
        in found
    )
    assert "validate[0].column: column 'total' is double; regex needs a string (cast it first)" in found
    assert any(p.startswith("quality.metrics[0].column: no column 'amount'") for p in found)


def test_source_column_message_names_the_source() -> None:
    cfg = parse_table_config({**BASE, "journal": {"keys": ["clientid"]}, "write": {"mode": "journal"}})
    assert check_columns(cfg, dict(cfg.schema_.columns or {})) == [
        "journal.keys[0]: no column 'clientid' in the source; did you mean 'client_id'?"
    ]


def test_yaml_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("table: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_table_config(bad)
    assert "not valid YAML" in info.value.problems[0]
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_table_config(tmp_path / "missing.yaml")


def test_checks_must_name_a_metric_and_problems_have_paths() -> None:
    found = problems(
        {
            **BASE,
            "source": {"type": "kafka", "topic": "t"},
            "schema": {"evolution": "fail"},
            "quality": {"metrics": [{"metric": "row_count"}], "checks": [{"metric": "row_cont", "min": 1}]},
            "write": {"mode": "merge"},
        }
    )
    assert found[:2] == [
        "write.keys: write.mode 'merge' needs write.keys",
        "schema.columns: a kafka source needs schema.columns to parse its JSON values",
    ]
    assert found[2].startswith("quality.checks[0].metric: no metric 'row_cont'; did you mean 'row_count'?")


KAFKA_YAML = """\
table: ${TABLE:-client_events}
source:
  type: kafka
  topic: ${EVENTS_TOPIC:-client-events}
  options: {kafka.client.id: "etl-$${literal}"}
schema:
  columns: {event_id: string, amount: double}
"""


def test_variables_are_filled_from_the_environment_with_defaults(tmp_path: Path) -> None:
    file = tmp_path / "events.yaml"
    file.write_text(KAFKA_YAML)
    cfg = load_table_config(file, environ={"EVENTS_TOPIC": "test-topic-1"})
    assert cfg.table == "client_events"
    assert isinstance(cfg.source, KafkaSource)
    assert cfg.source.topic == "test-topic-1"
    assert cfg.source.options == {"kafka.client.id": "etl-${literal}"}
    empty = load_table_config(file, environ={"EVENTS_TOPIC": ""}).source
    assert isinstance(empty, KafkaSource)
    assert empty.topic == "client-events"


def test_unset_variable_without_default_names_it_and_its_place(tmp_path: Path) -> None:
    file = tmp_path / "events.yaml"
    file.write_text(KAFKA_YAML.replace("${EVENTS_TOPIC:-client-events}", "${EVENTS_TOPIC}-${BAD"))
    with pytest.raises(ConfigError) as info:
        load_table_config(file, environ={})
    assert info.value.problems == [
        "source.topic: environment variable EVENTS_TOPIC is not set (set it, or give a default: "
        "${EVENTS_TOPIC:-value})",
        "source.topic: '${BAD' is not a variable reference; write ${NAME} or ${NAME:-default} "
        "(NAME: letters, digits, '_'), or $$ for a literal '$'",
    ]
    assert str(file) in str(info.value)


def test_overrides_are_merged_and_validated_like_the_file(tmp_path: Path) -> None:
    file = tmp_path / "events.yaml"
    file.write_text(KAFKA_YAML)
    cfg = load_table_config(file, overrides={"source": {"topic": "other"}}, environ={})
    assert isinstance(cfg.source, KafkaSource)
    assert cfg.source.topic == "other"
    assert cfg.source.options == {"kafka.client.id": "etl-${literal}"}
    with pytest.raises(ConfigError) as info:
        load_table_config(file, overrides={"source": {"topik": "x"}}, environ={})
    assert info.value.problems == ["source.topik: unknown key; did you mean 'topic'?"]


def test_kafka_json_options_cannot_turn_off_quarantine() -> None:
    source = {"type": "kafka", "topic": "t", "json_options": {"allowSingleQuotes": "true"}}
    cfg = parse_table_config({**BASE, "source": source})
    assert isinstance(cfg.source, KafkaSource)
    assert cfg.source.json_options == {"allowSingleQuotes": "true"}
    found = problems({**BASE, "source": {**source, "json_options": {"mode": "FAILFAST"}}})
    assert found == [
        "source.json_options: mode cannot be set: values that do not parse always go to quarantine"
    ]


def test_type_keywords_are_normalised_and_struct_field_names_keep_their_case() -> None:
    from thimble.etl.config import check_type

    assert check_type(" STRING ") == "string"
    assert check_type("ARRAY<STRUCT<clientId:BIGINT, `Score`:Double>>") == (
        "array<struct<clientId:bigint, `Score`:double>>"
    )
    assert check_type("Map<String, Decimal(10,2)>") == "map<string, decimal(10,2)>"


@pytest.mark.parametrize("topic", ["", "..", "a/b", "events,other", "x" * 250])
def test_a_kafka_source_names_a_topic_kafka_accepts(topic: str) -> None:
    (problem,) = problems({**BASE, "source": {"type": "kafka", "topic": topic}})
    assert problem.startswith("source.topic: ")
    assert "is not a Kafka topic name" in problem


def test_range_with_a_number_needs_a_number_column() -> None:
    # Spark would cast every string to a number and fail the run on the first one that is not.
    cfg = parse_table_config(
        {
            **BASE,
            "schema": {"columns": {"client_id": "string", "v": "string", "amount": "double"}},
            "validate": [
                {"rule": "range", "column": "v", "min": 5},
                {"rule": "range", "column": "v", "min": "a", "max": "m"},
                {"rule": "range", "column": "amount", "max": 10},
            ],
        }
    )
    assert check_columns(cfg, dict(cfg.schema_.columns or {})) == [
        "validate[0].column: column 'v' is string; range needs a number"
    ]
