"""Point-in-time training sets: each label row joined to the feature values valid at the label's time.

``training_set(labels, feature_sets, at="label_time")`` joins every label row, for each feature set, to
the version of its entity in the feature set's journal (thimble-etl's SCD type 2 table) that was valid
at the label's time: ``valid_from <= at < valid_to``, where an open version has ``valid_to`` null (or
any later time). So a label never sees a value written after its time:

* a label before the entity's first version, after the entity was deleted (its last version closed),
  of an unknown entity, or with a null time or key gets nulls for that set's features (a left join:
  the training set has exactly the label rows, in no particular order);
* each journal table is read at one Delta version, the latest when the set is built unless
  ``versions`` pins another, and the returned :class:`TrainingSetSpec` records it, with the label table
  and its version when the labels are a table: :func:`training_set_from_spec` rebuilds the same rows
  however the journals have changed since.

A feature column is named as the feature; a name already taken by a label column or another set's
feature is an error, unless ``prefix=True`` names every feature ``<table>__<feature>``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from pydantic import ValidationError

from thimble.common.config import ThimbleSettings
from thimble.common.features import JOURNAL_COLUMNS, FeatureSet, qualified_table
from thimble.common.validation import validation_problems
from thimble.modelops._training_spec import LabelTable, PinnedFeatureSet, TrainingSetSpec
from thimble.modelops.errors import ModelOpsError, SchemaMismatchError

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

__all__ = [
    "LabelTable",
    "PinnedFeatureSet",
    "TrainingSet",
    "TrainingSetSpec",
    "training_set",
    "training_set_from_spec",
]

VALID_FROM = "valid_from"
VALID_TO = "valid_to"
_LABEL_TIME_TYPES = ("timestamp", "timestamp_ntz", "date")
_TEMP = "__thimble_pit_"


class TrainingSet(NamedTuple):
    """A training set's rows and the spec that rebuilds them: ``df, spec = training_set(...)``."""

    df: DataFrame
    spec: TrainingSetSpec


def training_set(
    labels: DataFrame | str,
    feature_sets: Sequence[FeatureSet | str] | FeatureSet | str,
    *,
    at: str,
    key: str | None = None,
    versions: Mapping[str, int] | None = None,
    label_version: int | None = None,
    prefix: bool = False,
    spark: SparkSession | None = None,
    settings: ThimbleSettings | None = None,
) -> TrainingSet:
    """Join each label row to every feature set's values as of the label's time ``at`` (a column of
    ``labels`` holding a timestamp or a date).

    ``labels``: a DataFrame or a warehouse table (read at ``label_version``, default its latest).
    ``feature_sets``: :class:`FeatureSet` objects (their journal table in the warehouse database, joined
    on their entity key, their features) or journal table names (joined on ``key``; their features are
    every column but the key, the journal's own and those starting with ``_``). The labels need a column
    named as each entity key. ``versions`` pins journal tables (by table name or feature set name) to a
    Delta version; the others are read at their latest.
    """
    sets = [feature_sets] if isinstance(feature_sets, FeatureSet | str) else list(feature_sets)
    if not sets:
        raise ModelOpsError("training_set needs at least one feature set")
    settings = settings if settings is not None else _default_settings()
    if isinstance(labels, str):
        spark = spark if spark is not None else _session(settings)
    elif label_version is not None:
        raise ModelOpsError("label_version is for labels given as a table name, not a DataFrame")
    else:
        spark = labels.sparkSession
    pinning = _Pinning(spark, settings, key, dict(versions or {}), prefix)
    unused = sorted(set(pinning.versions) - {name for fs in sets for name in pinning.names(fs)})
    if unused:
        raise ModelOpsError(f"versions names {', '.join(unused)}: not one of the feature sets' tables")
    label_source: LabelTable | None = None
    if isinstance(labels, str):
        label_source = pinning.labels(_checked_table(labels, pinning.database, "labels"), label_version)
        frame = _read_labels(spark, label_source)
    else:
        frame = labels
    pinned = [pinning.feature_set(fs) for fs in sets]
    try:
        spec = TrainingSetSpec(at=at, labels=label_source, feature_sets=tuple(p for p, _ in pinned))
    except ValidationError as exc:
        raise ModelOpsError("training set: " + "; ".join(validation_problems(exc))) from None
    return TrainingSet(_join(frame, spec, [journal for _, journal in pinned]), spec)


def training_set_from_spec(
    spec: TrainingSetSpec | Mapping[str, Any],
    labels: DataFrame | None = None,
    *,
    spark: SparkSession | None = None,
    settings: ThimbleSettings | None = None,
) -> TrainingSet:
    """Rebuild a training set from its spec (or its JSON record): the same label table and journal
    tables at the recorded versions, so the same rows. Labels that were a DataFrame are not recorded:
    pass the same ``labels`` again."""
    if not isinstance(spec, TrainingSetSpec):
        try:
            spec = TrainingSetSpec.model_validate(spec)
        except ValidationError as exc:
            raise ModelOpsError("training set spec: " + "; ".join(validation_problems(exc))) from None
    if spec.labels is None:
        if labels is None:
            raise ModelOpsError("the spec's labels were a DataFrame, which it does not record: pass labels=")
        spark, frame = labels.sparkSession, labels
    else:
        if labels is not None:
            raise ModelOpsError(f"the spec's labels are the table {spec.labels.table}: do not pass labels=")
        if spark is None:
            spark = _session(settings if settings is not None else _default_settings())
        frame = _read_labels(spark, spec.labels)
    journals = [_read_at(spark, fs.table, fs.version, fs.name or fs.table) for fs in spec.feature_sets]
    return TrainingSet(_join(frame, spec, journals), spec)


def _default_settings() -> ThimbleSettings:
    from thimble.modelops.config import load_modelops_settings

    return load_modelops_settings()


def _session(settings: ThimbleSettings) -> SparkSession:
    """This process's active Spark session, else a new one built from ``settings``."""
    from pyspark.sql import SparkSession

    from thimble.common.spark import build_spark_session

    active = SparkSession.getActiveSession()
    return active if active is not None else build_spark_session(settings, app_name="thimble-modelops")


def _checked_table(table: str, database: str, what: str) -> str:
    name = qualified_table(table, database) if isinstance(table, str) else ""
    parts = name.split(".")
    if len(parts) != 2 or not all(p.isidentifier() and p.isascii() for p in parts):
        raise ModelOpsError(
            f"{what} {table!r} is not a warehouse table name: use 'table' or 'database.table'"
        )
    return name


@dataclass(frozen=True)
class _Pinning:
    """How :func:`training_set` finds its tables and their versions: the session, the warehouse
    database, and the caller's ``key``, ``versions`` and ``prefix``."""

    spark: SparkSession
    settings: ThimbleSettings
    key: str | None = None
    versions: Mapping[str, int] = field(default_factory=dict)
    prefix: bool = False

    @property
    def database(self) -> str:
        return self.settings.warehouse.database

    def names(self, fs: FeatureSet | str) -> set[str]:
        """The names ``versions`` may use for a feature set: its name, its table, its qualified table."""
        if isinstance(fs, FeatureSet):
            return {fs.name, fs.table, fs.journal_table(self.database)}
        return {fs, qualified_table(fs, self.database)}

    def feature_set(self, fs: FeatureSet | str) -> tuple[PinnedFeatureSet, DataFrame]:
        """The feature set's journal table at its pinned version, checked to hold the key and features."""
        if isinstance(fs, FeatureSet):
            name: str | None = fs.name
            what = f"feature set {fs.name!r}"
            table, entity_key = fs.journal_table(self.database), fs.entity_key
        elif isinstance(fs, str):
            name, what = None, f"journal table {fs!r}"
            table = _checked_table(fs, self.database, "journal table")
            if self.key is None:
                raise ModelOpsError(f"{what}: give key= (the entity key) for a journal table given by name")
            entity_key = self.key
        else:
            raise ModelOpsError(
                f"feature sets are FeatureSet objects or table names, not {type(fs).__name__}"
            )
        given = {self.versions[n] for n in self.names(fs) if n in self.versions}
        if len(given) > 1:
            raise ModelOpsError(f"versions gives {what} two versions: {sorted(given)}")
        version = _checked_version(given.pop(), what) if given else self._latest(table, what)
        journal = _read_at(self.spark, table, version, what)
        columns = journal.columns
        missing = [c for c in (entity_key, VALID_FROM, VALID_TO) if c not in columns]
        if missing:
            raise SchemaMismatchError(
                f"{what}: {table}@v{version} has no column {', '.join(map(repr, missing))}; a journal is "
                "written by thimble-etl's journal mode (columns: the entity key, the features, valid_from, "
                "valid_to)"
            )
        if isinstance(fs, FeatureSet):
            features = list(fs.features)
            absent = [f for f in features if f not in columns]
            if absent:
                raise SchemaMismatchError(
                    f"{what}: {table}@v{version} lacks its features {', '.join(map(repr, absent))}"
                )
        else:
            features = [
                c for c in columns if c != entity_key and c not in JOURNAL_COLUMNS and not c.startswith("_")
            ]
            if not features:
                raise SchemaMismatchError(f"{what}: {table}@v{version} has no feature column")
        try:
            pinned = PinnedFeatureSet(
                name=name,
                table=table,
                version=version,
                entity_key=entity_key,
                features=tuple(features),
                prefix=f"{table.split('.')[-1]}__" if self.prefix else "",
            )
        except ValidationError as exc:
            raise ModelOpsError(f"{what}: " + "; ".join(validation_problems(exc))) from None
        return pinned, journal

    def labels(self, table: str, version: int | None) -> LabelTable:
        """The label table at ``version``, else at its latest (None when it is not a Delta table)."""
        from thimble.etl import TableNotFoundError, table_version

        if version is not None:
            return LabelTable(table=table, version=_checked_version(version, "label_version"))
        try:
            latest: int | None = table_version(table, spark=self.spark, settings=self.settings)
        except TableNotFoundError:
            if not self.spark.catalog.tableExists(table):
                raise ModelOpsError(f"labels: no table '{table}' in the warehouse") from None
            latest = None  # not a Delta table: read as it is
        return LabelTable(table=table, version=latest)

    def _latest(self, table: str, what: str) -> int:
        from thimble.etl import TableNotFoundError, table_version

        try:
            return table_version(table, spark=self.spark, settings=self.settings)
        except TableNotFoundError as exc:
            raise ModelOpsError(f"{what}: {exc}") from None


def _checked_version(version: Any, what: str) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ModelOpsError(f"{what}: version {version!r} is not a Delta version (a number from 0)")
    return version


def _read_labels(spark: SparkSession, labels: LabelTable) -> DataFrame:
    if labels.version is None:
        return _guarded(lambda: spark.table(labels.table), "labels")
    return _read_at(spark, labels.table, labels.version, "labels")


def _read_at(spark: SparkSession, table: str, version: int, what: str) -> DataFrame:
    """``table`` as of Delta ``version``."""
    return _guarded(lambda: spark.read.format("delta").option("versionAsOf", version).table(table), what)


def _guarded(read: Callable[[], DataFrame], what: str) -> DataFrame:
    """``read()`` with its schema resolved, so that a missing table or version fails here, in one line
    (over Spark Connect, resolving the schema is what reaches the table)."""
    from pyspark.errors import PySparkException

    try:
        df = read()
        df.schema  # noqa: B018
    except PySparkException as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelOpsError(f"{what}: cannot read it: {reason}") from None
    return df


def _col(name: str) -> Column:
    from pyspark.sql import functions as F

    return F.col("`" + name.replace("`", "``") + "`")


def _check_labels(labels: DataFrame, spec: TrainingSetSpec) -> None:
    """The labels hold ``at`` (a time) and every entity key; no feature column takes a taken name."""
    types = {f.name: f.dataType.simpleString() for f in labels.schema.fields}
    if spec.at not in types:
        raise SchemaMismatchError(f"labels have no column {spec.at!r} (at=); columns: {', '.join(types)}")
    if types[spec.at] not in _LABEL_TIME_TYPES:
        raise SchemaMismatchError(
            f"labels column {spec.at!r} (at=) is {types[spec.at]}; the label time must be a timestamp or a date"
        )
    for fs in spec.feature_sets:
        if fs.entity_key not in types:
            raise SchemaMismatchError(
                f"labels have no column {fs.entity_key!r}, the entity key of {fs.name or fs.table}; "
                f"columns: {', '.join(types)}"
            )
    seen = {c: "the labels" for c in types}
    for fs in spec.feature_sets:
        for column in fs.columns:
            if column in seen:
                raise SchemaMismatchError(
                    f"feature column {column!r} of {fs.name or fs.table} is also a column of {seen[column]}: "
                    "rename it, or pass prefix=True to name features '<table>__<feature>'"
                )
            seen[column] = fs.name or fs.table
    if any(c.startswith(_TEMP) for c in seen):
        raise SchemaMismatchError(f"column names starting with {_TEMP!r} are reserved by training_set")


def _join(labels: DataFrame, spec: TrainingSetSpec, journals: list[DataFrame]) -> DataFrame:
    """Left-join the labels to each journal on its entity key and ``valid_from <= at < valid_to``."""
    from pyspark.sql import functions as F

    _check_labels(labels, spec)
    at = _col(spec.at)
    out = labels
    for i, (fs, table) in enumerate(zip(spec.feature_sets, journals, strict=True)):
        key, start, end = f"{_TEMP}{i}_key", f"{_TEMP}{i}_from", f"{_TEMP}{i}_to"
        journal = table.select(
            _col(fs.entity_key).alias(key),
            _col(VALID_FROM).alias(start),
            _col(VALID_TO).alias(end),
            *[_col(f).alias(c) for f, c in zip(fs.features, fs.columns, strict=True)],
        )
        valid_at = (
            (_col(fs.entity_key) == F.col(key))
            & (F.col(start) <= at)
            & (F.col(end).isNull() | (at < F.col(end)))
        )
        out = out.join(journal, valid_at, "left").drop(key, start, end)
    return out
