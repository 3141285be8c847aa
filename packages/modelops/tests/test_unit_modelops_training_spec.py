"""The training-set spec a model is saved with: a plain JSON record in its envelope, checked on the way back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from modelops_testmodels import churn

from thimble.modelops import (
    BrokenEntryError,
    ModelOpsError,
    Registry,
    TrainingSetSpec,
    training_set_from_spec,
)
from thimble.modelops.training import LabelTable, PinnedFeatureSet

pytestmark = pytest.mark.unit

SPEC = TrainingSetSpec(
    at="label_time",
    labels=LabelTable(table="warehouse.churn_labels", version=4),
    feature_sets=(
        PinnedFeatureSet(
            name="client-features",
            table="warehouse.client_features",
            version=12,
            entity_key="client_id",
            features=("orders_7d", "spend_7d"),
        ),
    ),
)
RECORD = {
    "format_version": 1,
    "at": "label_time",
    "labels": {"table": "warehouse.churn_labels", "version": 4},
    "feature_sets": [
        {
            "name": "client-features",
            "table": "warehouse.client_features",
            "version": 12,
            "entity_key": "client_id",
            "features": ["orders_7d", "spend_7d"],
            "prefix": "",
        }
    ],
}


def _envelope(registry: Registry, version: int = 1) -> Path:
    return Path(registry.root) / "churn" / "versions" / str(version) / "envelope.json"


def test_a_model_saved_with_a_training_set_spec_gives_it_back_and_stores_the_documented_record(
    registry: Registry,
) -> None:
    saved = registry.save(churn, training_set=SPEC, pickle_function=True)

    assert registry.info(saved.ref).context.training_set == SPEC
    envelope = json.loads(_envelope(registry).read_text())
    assert envelope["context"]["training_set"] == RECORD
    assert SPEC.model_dump(mode="json") == RECORD
    assert TrainingSetSpec.model_validate(RECORD) == SPEC
    assert SPEC.tables == {"warehouse.client_features": 12}
    assert str(SPEC) == (
        "labels warehouse.churn_labels@v4 as of 'label_time', features warehouse.client_features@v12"
    )


def test_a_model_saved_without_one_records_null(registry: Registry) -> None:
    saved = registry.save(churn, pickle_function=True)
    assert registry.info(saved.ref).context.training_set is None
    assert json.loads(_envelope(registry).read_text())["context"]["training_set"] is None


def test_saving_something_else_as_a_training_set_is_refused(registry: Registry) -> None:
    with pytest.raises(ModelOpsError, match="training_set: a training set or its spec, not dict"):
        registry.save(churn, training_set=RECORD, pickle_function=True)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("feature_sets", 0, "table"), "warehouse.t; DROP TABLE x"),
        (("feature_sets", 0, "table"), "../../etc"),
        (("feature_sets", 0, "entity_key"), "id`) OR (1=1"),
        (("feature_sets", 0, "version"), -1),
        (("feature_sets", 0, "prefix"), "a b"),
        (("feature_sets", 0, "name"), "client-features\u001b[2J"),
        (("labels", "table"), "churn_labels"),
        (("at",), ""),
        (("feature_sets",), []),
    ],
)
def test_an_envelope_whose_training_set_was_tampered_with_is_refused_in_one_line(
    registry: Registry, path: tuple[Any, ...], value: Any
) -> None:
    saved = registry.save(churn, training_set=SPEC, pickle_function=True)
    file = _envelope(registry)
    envelope = json.loads(file.read_text())
    target = envelope["context"]["training_set"]
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    file.write_text(json.dumps(envelope))

    with pytest.raises(
        BrokenEntryError, match=r"^model churn@1: its envelope .* is unreadable \(context\.training_set"
    ):
        registry.info(saved.ref)
    with pytest.raises(ModelOpsError, match=r"^training set spec: "):
        training_set_from_spec(envelope["context"]["training_set"])


def test_a_spec_whose_labels_were_a_dataframe_needs_them_again() -> None:
    spec = SPEC.model_copy(update={"labels": None})
    with pytest.raises(ModelOpsError, match=r"^the spec's labels were a DataFrame, which it does not record"):
        training_set_from_spec(spec)
