"""The record of a point-in-time training set: what it joined, pinned to versions, as plain JSON-able data.

A model's envelope keeps it (``context.training_set``), so it is read from files that others can write:
every table name is checked against the warehouse's grammar and every column name is a plain name.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from thimble.common.features import NAME_PATTERN

TableName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$")]
"""A qualified warehouse table: ``database.table``."""

ColumnName = Annotated[str, Field(pattern=r"^[^`\x00-\x1f]{1,255}$")]
"""A column name: no backtick, no control character, at most 255 characters."""


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LabelTable(_Record):
    """The labels' warehouse table and its Delta version (``None``: not a Delta table, read as it is)."""

    table: TableName
    version: int | None = Field(default=None, ge=0)


class PinnedFeatureSet(_Record):
    """One feature set's journal table at one Delta version, joined on ``entity_key``.

    Its columns in the training set are ``prefix + feature`` for each of ``features``.
    """

    name: str | None = Field(
        default=None,
        pattern=f"^{NAME_PATTERN.pattern}$",
        description="the FeatureSet's name; None for a table given by name",
    )
    table: TableName
    version: int = Field(ge=0)
    entity_key: ColumnName
    features: tuple[ColumnName, ...] = Field(min_length=1)
    prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_]{0,130}$")] = ""

    @property
    def columns(self) -> tuple[str, ...]:
        """The names of this set's columns in the training set."""
        return tuple(self.prefix + f for f in self.features)


class TrainingSetSpec(_Record):
    """Everything needed to rebuild a training set exactly: the label time column, the label table (when
    the labels were one) and each feature set's journal table at its version.

    ``model_dump(mode="json")`` is its record::

        {"format_version": 1, "at": "label_time",
         "labels": {"table": "warehouse.churn_labels", "version": 4} | null,
         "feature_sets": [{"name": "client-features", "table": "warehouse.client_features",
                           "version": 12, "entity_key": "client_id",
                           "features": ["orders_7d", "spend_7d"], "prefix": ""}]}
    """

    format_version: Literal[1] = 1
    at: ColumnName
    labels: LabelTable | None = None
    feature_sets: tuple[PinnedFeatureSet, ...] = Field(min_length=1)

    @property
    def tables(self) -> dict[str, int]:
        """Each journal table and its pinned version."""
        return {fs.table: fs.version for fs in self.feature_sets}

    def __str__(self) -> str:
        tables = ", ".join(f"{fs.table}@v{fs.version}" for fs in self.feature_sets)
        labels = "a DataFrame" if self.labels is None else _shown(self.labels.table, self.labels.version)
        return f"labels {labels} as of {self.at!r}, features {tables}"


def _shown(table: str, version: int | None) -> str:
    return table if version is None else f"{table}@v{version}"
