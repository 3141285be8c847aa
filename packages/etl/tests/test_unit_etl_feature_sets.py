"""A landing dataset is a safe name; a FeatureSet gives a table config its source, columns and journal."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path

import pytest
from pydantic import BaseModel

from thimble.common.features import FeatureSet
from thimble.etl import feature_set_config, load_table_config, parse_table_config
from thimble.etl._feature_sets import with_feature_set
from thimble.etl.errors import ConfigError

pytestmark = pytest.mark.unit


class ClientFeatures(BaseModel):
    client_id: str
    event_time: datetime
    orders: int = 0
    total_spent: float = 0.0
    avg_rating: float | None = None
    tags: list[str] = []


client_features = FeatureSet(
    "client-features", ClientFeatures, entity_key="client_id", event_time="event_time"
)


@pytest.mark.parametrize("dataset", ["../../etc", "a/b", "..", ".hidden", "", "x y", "/abs"])
def test_a_landing_dataset_that_is_no_safe_name_is_refused_naming_the_field(dataset: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_table_config({"table": "t", "source": {"type": "landing", "dataset": dataset}})
    assert error.value.problems == [
        f"source.dataset: dataset {dataset!r} is not a valid name: use letters, digits, '_' and '-', "
        "starting with a letter or digit (at most 128 characters)"
    ]


def test_a_dataset_from_a_variable_is_checked_after_substitution(tmp_path: Path) -> None:
    file = tmp_path / "t.yaml"
    file.write_text("table: t\nsource:\n  type: landing\n  dataset: ${DATASET}\n")
    assert load_table_config(file, environ={"DATASET": "client_features"}).source.dataset == "client_features"  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match=r"source\.dataset: dataset '\.\./up' is not a valid name"):
        load_table_config(file, environ={"DATASET": "../up"})


def test_the_config_of_a_feature_set_journals_its_landed_dataset() -> None:
    config = parse_table_config(feature_set_config(client_features))
    assert config.table == "client_features"
    assert config.source.type == "landing"
    assert config.source.dataset == "client_features"  # type: ignore[union-attr]
    assert config.schema_.columns == {
        "client_id": "string",
        "event_time": "timestamp",
        "orders": "bigint",
        "total_spent": "double",
        "avg_rating": "double",
        "tags": "string",
    }
    assert config.journal is not None
    assert (config.journal.keys, config.journal.order_by) == (["client_id"], "event_time")
    assert config.write.mode == "journal"


@pytest.fixture
def module_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """``module:attribute`` of ``client_features`` defined in a module of its own."""
    name = f"features_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        "from datetime import datetime\n"
        "from pydantic import BaseModel\n"
        "from thimble.common.features import FeatureSet\n"
        "class ClientFeatures(BaseModel):\n"
        "    client_id: str\n"
        "    event_time: datetime\n"
        "    orders: int = 0\n"
        "client_features = FeatureSet('client-features', ClientFeatures, entity_key='client_id', "
        "event_time='event_time')\n"
        "not_a_feature_set = 42\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_a_feature_set_key_fills_what_the_file_leaves_out(tmp_path: Path, module_path: str) -> None:
    file = tmp_path / "client_features.yaml"
    file.write_text(
        f"feature_set: {module_path}:client_features\n"
        "journal:\n  deletes: close\n"
        "validate:\n  - rule: not_null\n    columns: [client_id]\n"
    )
    config = load_table_config(file)
    assert config.feature_set == f"{module_path}:client_features"
    assert config.table == "client_features"
    assert config.source.dataset == "client_features"  # type: ignore[union-attr]
    assert config.schema_.columns is not None
    assert config.schema_.columns == {"client_id": "string", "event_time": "timestamp", "orders": "bigint"}
    assert config.journal is not None
    assert (config.journal.keys, config.journal.order_by, config.journal.deletes) == (
        ["client_id"],
        "event_time",
        "close",
    )
    assert config.write.mode == "journal"
    assert len(config.validate_) == 1


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("no colon here", "feature_set: 'no colon here' is not an import path"),
        ("no_such_module_xyz:fs", "feature_set: cannot import 'no_such_module_xyz': ModuleNotFoundError"),
        (
            "{module}:not_a_feature_set",
            "feature_set: {module}:not_a_feature_set is no thimble.common.features.FeatureSet (found a int there)",
        ),
        (
            "{module}:missing",
            "feature_set: {module}:missing is no thimble.common.features.FeatureSet (found no attribute 'missing')",
        ),
    ],
)
def test_a_feature_set_key_that_names_no_feature_set_is_one_line(
    module_path: str, value: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as error:
        parse_table_config({"feature_set": value.format(module=module_path)})
    (line,) = error.value.problems
    assert line.startswith(problem.format(module=module_path))


class Counts(BaseModel):
    client_id: str
    event_ms: int
    orders: int = 0


COUNTS = FeatureSet("client-counts", Counts, entity_key="client_id", event_time="event_ms")


def test_an_event_time_in_epoch_milliseconds_becomes_a_timestamp_before_every_other_step() -> None:
    config = parse_table_config(feature_set_config(COUNTS))
    assert [type(s).__name__ for s in config.cleanse] == ["SqlStep"]
    assert config.journal is not None
    assert config.journal.order_by == "event_ms"

    merged = with_feature_set({"cleanse": [{"step": "trim", "columns": ["client_id"]}]}, COUNTS)
    assert [s["step"] for s in merged["cleanse"]] == ["sql", "trim"]
