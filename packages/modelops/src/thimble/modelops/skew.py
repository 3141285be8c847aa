"""Online/offline skew: does the online store hold what the warehouse journal holds for a feature set?

:func:`skew` samples entities from both sides (current rows of the feature set's journal table, keys of
its online store) and compares each entity's features field by field: numbers within a tolerance, ``None``
and NaN alike, timestamps as epoch milliseconds, nested values as JSON.

The online store is written first and the warehouse loads later, so an entity whose online event time is
newer than its warehouse row (or, for an entity not yet in the warehouse, newer than the newest event time
loaded) is *lag*, reported apart and not counted as skew. Skew is an entity the warehouse holds that the
online store lacks, an online event time older than the warehouse's, a field that differs at the same
event time, or an entity only online that the warehouse should already hold.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from thimble.common.features import EVENT_TIME_FIELD, JOURNAL_COLUMNS, TABLE_NAME, FeatureSet, check_name
from thimble.common.text import cut, escape_controls
from thimble.modelops._import_path import import_object
from thimble.modelops._skew_sides import OnlineSide, WarehouseSide
from thimble.modelops._skew_values import event_ms, local_times, plain
from thimble.modelops._skew_values import same_value as same_value
from thimble.modelops.config import ModelOpsSettings, load_modelops_settings
from thimble.modelops.errors import ModelOpsError

if TYPE_CHECKING:
    import redis
    from pyspark.sql import SparkSession


@dataclass(frozen=True, slots=True)
class SkewTarget:
    """What to compare: a feature set's online name, its journal table, entity key and event time fields.

    ``features`` ``None``: every field both sides hold, but the entity key, the event time and the
    journal's own columns.
    """

    name: str
    table: str
    entity_key: str
    event_time: str
    features: tuple[str, ...] | None = None

    @classmethod
    def of(cls, feature_set: FeatureSet, database: str) -> SkewTarget:
        return cls(
            feature_set.name,
            feature_set.journal_table(database),
            feature_set.entity_key,
            feature_set.event_time,
            feature_set.features,
        )

    @classmethod
    def named(
        cls, name: str, database: str, entity_key: str, event_time: str, table: str | None = None
    ) -> SkewTarget:
        """A feature set known by name only: its table defaults to the name with ``-`` as ``_``."""
        check_name(name, "feature set")
        table = table or name.replace("-", "_")
        if not TABLE_NAME.fullmatch(table):
            raise ModelOpsError(
                f"table {table!r} is not a valid table name: use letters, digits and '_' (optionally database.table)"
            )
        for what, column in (("entity key", entity_key), ("event time", event_time)):
            if not column or "`" in column:
                raise ModelOpsError(f"{what} {column!r} is not a valid column name")
        return cls(name, table if "." in table else f"{database}.{table}", entity_key, event_time)


@dataclass(frozen=True, slots=True)
class FieldMismatch:
    """A feature whose values differ between the two sides (``None``: absent or null)."""

    entity: str
    field: str
    online: Any
    warehouse: Any


@dataclass(frozen=True, slots=True)
class EventTimes:
    """An entity's event time on each side, in epoch milliseconds (``None``: not on that side)."""

    entity: str
    online_ms: int | None
    warehouse_ms: int | None


@dataclass
class SkewReport:
    """What :func:`skew` found; :attr:`skewed` are the entities that count as skew."""

    feature_set: str
    table: str
    table_version: int | None
    entities: int
    """Distinct entities sampled, from either side."""
    agreeing: int
    only_online: list[EventTimes] = field(default_factory=list)
    only_warehouse: list[str] = field(default_factory=list)
    mismatches: list[FieldMismatch] = field(default_factory=list)
    online_newer: list[EventTimes] = field(default_factory=list)
    """Lag, not skew: the online store already holds a later event than the warehouse."""
    warehouse_newer: list[EventTimes] = field(default_factory=list)
    watermark_ms: int | None = None
    """The newest event time in the journal: an entity only online and newer than this is lag."""

    @property
    def missing_from_warehouse(self) -> list[EventTimes]:
        """Entities only online that are not newer than what the warehouse loaded: skew."""
        mark = self.watermark_ms
        return [e for e in self.only_online if mark is None or (e.online_ms or 0) <= mark]

    @property
    def skewed(self) -> list[str]:
        """Entities that disagree in a way lag does not explain, sorted."""
        found = {m.entity for m in self.mismatches}
        found.update(self.only_warehouse)
        found.update(e.entity for e in self.warehouse_newer)
        found.update(e.entity for e in self.missing_from_warehouse)
        return sorted(found)

    @property
    def share(self) -> float:
        """Skewed entities over sampled ones (0 when nothing was sampled)."""
        return len(self.skewed) / self.entities if self.entities else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-able data, with ``skewed`` and ``share``."""
        out = asdict(self)
        out["mismatches"] = [{**asdict(m), **_jsonable(m)} for m in self.mismatches]
        out["skewed"] = self.skewed
        out["share"] = self.share
        return out


def _jsonable(m: FieldMismatch) -> dict[str, Any]:
    return {side: plain(getattr(m, side)) for side in ("online", "warehouse")}


# --- the check ----------------------------------------------------------------------------------------


def compare(
    target: SkewTarget,
    online: Mapping[str, Mapping[str, Any]],
    warehouse: Mapping[str, Mapping[str, Any]],
    entities: Iterable[str],
    tolerance: float = 1e-9,
) -> SkewReport:
    """Compare ``entities`` between the two sides' rows (by entity), without a watermark or version."""
    report = SkewReport(target.name, target.table, None, 0, 0)
    for entity in sorted(set(entities)):
        on, off = online.get(entity), warehouse.get(entity)
        if on is None and off is None:  # gone from both since it was sampled
            continue
        report.entities += 1
        online_ms = on.get(EVENT_TIME_FIELD) if on is not None else None
        if off is None:
            report.only_online.append(EventTimes(entity, online_ms, None))
            continue
        warehouse_ms = event_ms(off.get(target.event_time))
        if on is None:
            report.only_warehouse.append(entity)
            continue
        times = EventTimes(entity, online_ms, warehouse_ms)
        if online_ms is not None and warehouse_ms is not None and online_ms > warehouse_ms:
            report.online_newer.append(times)
            continue
        if online_ms is None or warehouse_ms is None or online_ms < warehouse_ms:
            report.warehouse_newer.append(times)
        mismatches = list(_differences(target, entity, on, off, tolerance))
        report.mismatches.extend(mismatches)
        if not mismatches and times not in report.warehouse_newer:
            report.agreeing += 1
    return report


def _differences(
    target: SkewTarget, entity: str, on: Mapping[str, Any], off: Mapping[str, Any], tolerance: float
) -> Iterator[FieldMismatch]:
    fields = target.features
    if fields is None:
        skip = {target.entity_key, target.event_time, *JOURNAL_COLUMNS}
        fields = tuple(f for f in off if f in on and f not in skip and not f.startswith("_"))
    for name in fields:
        online_value, warehouse_value = on.get(name), off.get(name)
        if not same_value(online_value, warehouse_value, tolerance):
            yield FieldMismatch(entity, name, online_value, warehouse_value)


def skew(
    feature_set: FeatureSet | SkewTarget,
    sample: int = 1000,
    *,
    spark: SparkSession | None = None,
    settings: ModelOpsSettings | None = None,
    tolerance: float = 1e-9,
    seed: int | None = None,
    redis_client: redis.Redis | None = None,
) -> SkewReport:
    """Sample up to ``sample`` entities from each side of ``feature_set`` and compare them.

    ``settings`` give the online store (``online_store``) and the warehouse database; ``spark`` defaults
    to the session built from them (left running, as thimble-etl's commands leave theirs). Raises :class:`ModelOpsError` when the journal table does not exist.
    """
    import redis as redis_lib

    if sample < 1:
        raise ModelOpsError(f"sample must be at least 1 (got {sample})")
    settings = settings if settings is not None else load_modelops_settings()
    target = (
        feature_set
        if isinstance(feature_set, SkewTarget)
        else SkewTarget.of(feature_set, settings.warehouse.database)
    )
    if spark is None:
        from thimble.common.spark import build_spark_session

        spark = build_spark_session(settings, app_name=f"thimble-modelops-skew-{target.name}")
    store = settings.online_store
    client = redis_client or redis_lib.Redis.from_url(
        store.url,
        password=store.password.get_secret_value() if store.password else None,
        socket_timeout=30,
        socket_connect_timeout=5,
    )
    try:
        side = WarehouseSide(spark, target)
        online_side = OnlineSide(client, store.key_prefix, target)
        warehouse = {
            e: local_times(r)
            for e, r in side.sample(sample, seed if seed is not None else random.randrange(2**31)).items()
        }
        try:
            online_sampled = online_side.sample(sample, scan_limit=100 * sample)
            entities = list(dict.fromkeys([*warehouse, *online_sampled]))
            online = online_side.read(entities)
        except redis_lib.RedisError as exc:
            raise ModelOpsError(f"online store at {store.url}: {exc}") from None
        unread = [e for e in online_sampled if e not in warehouse]
        warehouse.update({e: local_times(r) for e, r in side.read(unread).items()})
        report = compare(target, online, warehouse, entities, tolerance)
        report.watermark_ms = side.watermark_ms() if report.only_online else None
        report.table_version = _version(spark, target.table, settings)
        return report
    finally:
        if redis_client is None:
            client.close()


def _version(spark: SparkSession, table: str, settings: ModelOpsSettings) -> int | None:
    from thimble.modelops.batch import table_version

    return table_version(spark, table, settings)


# --- naming a feature set on the command line --------------------------------------------------------

_IMPORT_PATH = (
    r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
)


def resolve_target(
    spec: str,
    database: str,
    *,
    entity_key: str | None = None,
    event_time: str | None = None,
    table: str | None = None,
) -> SkewTarget:
    """A feature set given as ``module:attribute`` (a :class:`FeatureSet`), or as a name with its entity
    key and event time fields; a :class:`ModelOpsError` naming what is wrong otherwise."""
    import re

    from thimble.common.errors import ConfigError

    if ":" in spec:
        if not re.fullmatch(_IMPORT_PATH, spec):
            raise ModelOpsError(
                f"{spec!r} is not an import path: give module:attribute, e.g. app.features:clients"
            )
        try:
            found = import_object(spec)
        except (ImportError, AttributeError) as exc:
            raise ModelOpsError(f"cannot import {spec}: {exc}") from None
        if not isinstance(found, FeatureSet):
            raise ModelOpsError(f"{spec} is a {type(found).__name__}, not a FeatureSet")
        if entity_key or event_time or table:
            raise ModelOpsError(f"{spec} is a FeatureSet: it names its entity key, event time and table")
        return SkewTarget.of(found, database)
    try:
        check_name(spec, "feature set")
    except ConfigError as exc:
        raise ModelOpsError("; ".join(exc.problems)) from None
    if not (entity_key and event_time):
        raise ModelOpsError(
            f"feature set {spec!r} by name needs --entity-key and --event-time (or give it as module:attribute)"
        )
    return SkewTarget.named(spec, database, entity_key, event_time, table)


def render(report: SkewReport, limit: int = 20) -> list[Any]:
    """The report as rich renderables: a summary table and, when there is any, a table of differences."""
    from rich.markup import escape
    from rich.table import Table

    summary = Table("feature set", "table", "entities", "agree", "skewed", "lag (online newer)", "share")
    version = f" v{report.table_version}" if report.table_version is not None else ""
    summary.add_row(
        escape(report.feature_set),
        escape(report.table + version),
        str(report.entities),
        str(report.agreeing),
        str(len(report.skewed)),
        str(len(report.online_newer) + len(report.only_online) - len(report.missing_from_warehouse)),
        f"{report.share:.2%}",
    )
    out: list[Any] = [summary]
    rows: list[tuple[str, str, str, str]] = []
    rows += [(e, "only in the warehouse", "-", "") for e in report.only_warehouse]
    rows += [
        (e.entity, "only online", f"event {_when(e.online_ms)}", "-") for e in report.missing_from_warehouse
    ]
    rows += [
        (e.entity, "warehouse newer", f"event {_when(e.online_ms)}", f"event {_when(e.warehouse_ms)}")
        for e in report.warehouse_newer
    ]
    rows += [(m.entity, m.field, _shown(m.online), _shown(m.warehouse)) for m in report.mismatches]
    if rows:
        detail = Table("entity", "what differs", "online", "warehouse", title="skew", title_justify="left")
        for row in rows[:limit]:
            detail.add_row(*(escape(escape_controls(cell)) for cell in row))  # keys from the stores too
        out.append(detail)
        if len(rows) > limit:
            out.append(f"… and {len(rows) - limit} more")
    return out


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _shown(value: Any) -> str:
    # A value from Redis or the warehouse: JSON leaves C1 controls and bidi marks as they are.
    return cut(orjson.dumps(plain(value), default=str).decode(), 80)
