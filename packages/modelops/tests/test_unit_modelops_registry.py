from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest
from modelops_testmodels import churn, churn_sample, scorer
from pydantic import BaseModel

from thimble.modelops import ModelContext, Registry, Tracker, model
from thimble.modelops.errors import ArtifactError, ModelLoadError, ModelNotFoundError, ModelOpsError

pytestmark = pytest.mark.unit


def test_save_records_the_envelope_and_load_predicts_the_same(
    saved_churn: Registry, churn_clf: object
) -> None:
    info = saved_churn.info("churn@prod")
    assert info.version == 1
    assert info.function.pickle_file == "function.pkl"
    assert info.context.training_data is not None
    assert str(info.context.training_data) == "warehouse.client_features@v12"
    assert info.context.metrics == {"auc": 0.81}
    assert info.context.python
    assert "scikit-learn" in info.context.packages
    assert info.sample_rows == 300
    assert set(info.input_schema["properties"]) == {"client_id", "orders_7d", "spend_7d"}
    assert "input.client_id" not in info.baseline
    assert {"input.spend_7d", "output.p_churn"} <= set(info.baseline)
    loaded = saved_churn.load("churn@prod")
    rows = churn_sample(5, seed=3)
    assert loaded.predict(rows) == churn.bind({"clf": churn_clf}).predict(rows)
    assert loaded.environment_warnings == []
    assert len(saved_churn.sample("churn@1")) == 300


def test_importable_functions_are_saved_by_path(registry: Registry, numbers_clf: object) -> None:
    info = registry.save(scorer, artifacts={"clf": numbers_clf})
    assert info.function.import_path == "modelops_testmodels:scorer"
    assert info.function.pickle_file is None
    assert registry.load("scorer").function is scorer


def test_versions_are_immutable_and_aliases_move(saved_churn: Registry, churn_clf: object) -> None:
    first = saved_churn.info("churn@1").model_dump_json()
    info2 = saved_churn.save(churn, artifacts={"clf": churn_clf}, pickle_function=True)
    assert info2.version == 2
    assert saved_churn.info("churn@1").model_dump_json() == first
    assert saved_churn.resolve("churn") == ("churn", 2)
    assert saved_churn.resolve("churn@prod") == ("churn", 1)
    assert saved_churn.set_alias("churn", "prod", "2") == 2
    assert saved_churn.set_alias("churn", "staging", "v1") == 1
    assert saved_churn.aliases("churn") == {"prod": 2, "staging": 1}
    assert [(m.name, m.versions) for m in saved_churn.models()] == [("churn", [1, 2])]
    saved_churn.delete_alias("churn", "staging")
    assert saved_churn.aliases("churn") == {"prod": 2}


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("chrun", "no model 'chrun'.*did you mean 'churn'"),
        ("churn@canary", "no alias 'canary'; aliases: prod -> 1"),
        ("churn@7", "no version 7; versions: 1"),
        ("@prod", "not a model reference"),
    ],
)
def test_unknown_models_aliases_and_versions_say_what_exists(
    saved_churn: Registry, ref: str, message: str
) -> None:
    with pytest.raises(ModelNotFoundError, match=message):
        saved_churn.load(ref)


def test_bad_alias_names_are_refused(saved_churn: Registry) -> None:
    for bad in ("latest", "3", "Prod!"):
        with pytest.raises(ModelOpsError, match="alias"):
            saved_churn.set_alias("churn", bad, 1)


def test_missing_or_corrupt_artifact_is_a_clear_error(saved_churn: Registry) -> None:
    artifact = Path(saved_churn.root) / "churn/versions/1/artifacts/clf.joblib"
    data = artifact.read_bytes()
    artifact.write_bytes(data[:-10] + b"0123456789")
    with pytest.raises(ArtifactError, match="artifact 'clf' is corrupt"):
        saved_churn.load("churn@1")
    artifact.unlink()
    with pytest.raises(ArtifactError, match=r"artifact 'clf' is missing \(.*clf.joblib\)"):
        saved_churn.load("churn@1")


def test_unimportable_function_is_a_clear_error(saved_churn: Registry) -> None:
    envelope = Path(saved_churn.root) / "churn/versions/1/envelope.json"
    doc = orjson.loads(envelope.read_bytes())
    doc["function"] = {"import_path": "no_such_module.models:predict", "pickle_file": None}
    envelope.write_bytes(orjson.dumps(doc))
    with pytest.raises(ModelLoadError, match=r"cannot import its function no_such_module\.models:predict"):
        saved_churn.load("churn@1")


def test_loading_in_a_different_environment_warns(
    saved_churn: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    envelope = Path(saved_churn.root) / "churn/versions/1/envelope.json"
    doc = orjson.loads(envelope.read_bytes())
    doc["context"]["python"] = "3.8.1"
    doc["context"]["packages"]["scikit-learn"] = "0.24.0"
    doc["context"]["packages"]["no-such-dist"] = "1.0"
    envelope.write_bytes(orjson.dumps(doc))
    with caplog.at_level(logging.WARNING):
        loaded = saved_churn.load("churn@1")
    assert any(w.startswith("Python: saved with 3.8.1") for w in loaded.environment_warnings)
    assert any(w.startswith("scikit-learn: saved with 0.24.0, running ") for w in loaded.environment_warnings)
    assert "no-such-dist: saved with 1.0, not installed here" in loaded.environment_warnings
    assert "saved in a different environment" in caplog.text


def test_save_refuses_bad_input_before_writing(registry: Registry, churn_clf: object) -> None:
    with pytest.raises(ModelOpsError, match="metrics must be numbers: auc"):
        registry.save(churn, artifacts={"clf": churn_clf}, metrics={"auc": "high"})  # type: ignore[dict-item]
    with pytest.raises(ModelOpsError, match=r"spend_7d"):
        registry.save(churn, artifacts={"clf": churn_clf}, sample=[{"client_id": 1, "spend_7d": "x"}])
    with pytest.raises(ArtifactError, match="cannot be pickled"):
        registry.save(churn, artifacts={"clf": churn_clf, "lock": __import__("threading").Lock()})
    assert registry.models() == []


def test_every_save_is_tracked(saved_churn: Registry) -> None:
    tracker = Tracker(Path(saved_churn.root) / "_tracking.sqlite")
    (record,) = tracker.records("churn")
    assert record.source == "save"
    assert record.version == 1
    assert record.metrics["train.auc"] == pytest.approx(0.81)
    assert record.metrics["sample.rows"] == 300
    assert "output.p_churn" in record.distributions
    assert record.info["training_data"] == "warehouse.client_features@v12"


class WideIn(BaseModel):
    x: float


class WideOut(BaseModel):
    y: float


@model(name="wide")
def wide(ctx: ModelContext, rows: list[WideIn]) -> list[WideOut]:
    return [WideOut(y=r.x / 2) for r in rows]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), 1e999, 10**400])
def test_save_refuses_a_metric_that_is_not_a_finite_number(registry: Registry, value: float) -> None:
    with pytest.raises(ModelOpsError, match=r"^metrics must be finite numbers: auc=\S+$"):
        registry.save(wide, metrics={"loss": 0.2, "auc": value})
    assert registry.models() == []
    assert registry.tracker().records() == []


def test_save_refuses_params_and_sample_values_that_are_not_finite(registry: Registry) -> None:
    with pytest.raises(ModelOpsError, match=r"^params must hold finite numbers only: grid holds NaN"):
        registry.save(wide, params={"seed": 1, "grid": {"alpha": [0.1, float("nan")]}})
    with pytest.raises(ModelOpsError, match=r"^sample row 1: x is inf; sample values must be finite"):
        registry.save(wide, sample=[{"x": 1.0}, {"x": float("inf")}])
    assert registry.models() == []


def test_a_metric_written_as_null_by_0_1_0_reads_as_absent(registry: Registry) -> None:
    registry.save(wide, metrics={"auc": 0.8, "loss": 0.1})
    envelope = Path(registry.root) / "wide" / "versions" / "1" / "envelope.json"
    doc = orjson.loads(envelope.read_bytes())
    doc["context"]["metrics"]["auc"] = None  # how 0.1.0 saved auc=nan
    envelope.write_bytes(orjson.dumps(doc))
    assert registry.info("wide@1").context.metrics == {"loss": 0.1}
    assert registry.load("wide@1").predict([{"x": 3.0}]) == [{"y": 1.5}]


def test_a_sample_too_wide_for_float64_bins_is_saved_without_that_baseline(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        info = registry.save(wide, sample=[{"x": -1.7e308}, {"x": 1.7e308}])  # quantiles overflow
    assert "input.x" not in info.baseline
    assert "output.y" in info.baseline  # halved, they fit
    assert registry.info("wide@1").baseline == info.baseline
    assert "no drift baseline" in caplog.text
