"""The flow's client features are defined once: the consumer, the warehouse table and the model agree with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from integration.flow.events import client_features, names
from integration.flow.features import app
from integration.flow.train import return_risk
from thimble.consumer import Landing, OnlineStore
from thimble.etl import feature_set_config, load_table_config

pytestmark = pytest.mark.unit

TABLES = Path(__file__).parents[1] / "flow" / "tables"


def test_the_features_consumer_writes_the_feature_set() -> None:
    (handler,) = app.handlers
    assert handler.state is not None
    assert handler.state.feature_set == client_features  # its state: the feature set's online hashes
    assert not [s for s in handler.sinks if isinstance(s, OnlineStore)]
    landing = [s for s in handler.sinks if isinstance(s, Landing)]
    assert [s.definition for s in landing] == [client_features]
    assert (handler.state.feature_set.name, landing[0].dataset) == (names.feature_set, names.features_dataset)
    assert client_features.online_key("features", "c00042") == "features:client-features:c00042"


def test_the_model_reads_the_feature_set() -> None:
    assert return_risk.features is not None
    assert return_risk.features.feature_set == client_features.name
    assert return_risk.features.entity_key == client_features.entity_key
    assert set(return_risk.features.fields) <= set(client_features.features)


def test_the_journal_table_config_agrees_with_the_feature_set() -> None:
    config = load_table_config(TABLES / "client_features.yaml")
    defined = feature_set_config(client_features)
    assert config.table == defined["table"]
    assert config.source.model_dump() == {**defined["source"], "incremental": True}
    assert config.schema_.columns == defined["schema"]["columns"]
    assert config.journal is not None
    assert config.journal.model_dump(include={"keys", "order_by"}) == defined["journal"]
