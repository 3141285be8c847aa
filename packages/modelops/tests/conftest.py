"""Shared fixtures: test models and a temporary registry (the live server comes from thimble-testing)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).parent))

from modelops_testmodels import save_churn

from thimble.modelops import Registry


@pytest.fixture(scope="session")
def churn_clf() -> LogisticRegression:
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.integers(0, 20, 500), rng.normal(50, 20, 500)])
    y = (x[:, 0] < 5).astype(int)
    return LogisticRegression().fit(x, y)


@pytest.fixture(scope="session")
def numbers_clf() -> LogisticRegression:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 4))
    return LogisticRegression().fit(x, (x.sum(axis=1) > 0).astype(int))


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(str(tmp_path / "models"))


@pytest.fixture
def saved_churn(registry: Registry, churn_clf: LogisticRegression) -> Registry:
    """A registry with churn@1 (alias prod), pickled by value so that any process can load it."""
    save_churn(registry, churn_clf)
    return registry
