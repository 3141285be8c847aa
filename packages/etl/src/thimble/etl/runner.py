"""Run a table: read -> cleanse -> validate -> quality gate -> write, as one Delta commit (or none)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from thimble.common.config import ThimbleSettings, load_settings
from thimble.common.errors import spark_failure
from thimble.common.logging import bind_context, get_logger
from thimble.etl import _tables
from thimble.etl.__about__ import __version__
from thimble.etl._columns import check_columns
from thimble.etl.cleanse import cleanse
from thimble.etl.config import (
    CleanseStep,
    EtlSettings,
    JournalConfig,
    QualityConfig,
    Rule,
    TableConfig,
    load_table_config,
)
from thimble.etl.errors import ConfigError, EtlError, SparkJobError
from thimble.etl.journal import CLOSE_GUARD, check_conflicts, close_guard
from thimble.etl.quality import (
    METRICS_SCHEMA,
    CheckResult,
    ObservedMetrics,
    compute_metrics,
    evaluate,
    metric_rows,
    observe_metrics,
)
from thimble.etl.sources import read_source
from thimble.etl.validate import FAILED, effective_rules, flag, passing, quarantine_rows
from thimble.etl.writer import WriteMode, WriteSpec, count, prepare, write, write_in_one_pass

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = get_logger(__name__)

RunStatus = Literal["committed", "blocked", "unchanged", "no_new_data"]


@dataclass
class RunResult:
    """What one run did. ``version`` is the table's version after the run."""

    table: str
    run_id: str
    status: RunStatus
    version: int | None
    previous_version: int | None
    config_hash: str = ""
    rows_read: int = 0
    rows_cleansed: int = 0
    rows_quarantined: int = 0
    inserted: int = 0
    updated: int = 0
    closed: int = 0
    metrics: dict[str, float | None] = field(default_factory=dict)
    checks: list[CheckResult] = field(default_factory=list)
    spark_jobs: dict[str, int] = field(default_factory=dict)
    phase_seconds: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    source: str = ""

    @property
    def committed(self) -> bool:
        return self.status == "committed"

    @property
    def check_counts(self) -> dict[str, int]:
        """``{"pass": n, "warn": n, "fail": n}``."""
        out = {"pass": 0, "warn": 0, "fail": 0}
        for check in self.checks:
            out[check.status] += 1
        return out


class Progress(Protocol):
    """Told when each phase of a run starts; ``group`` is the Spark job group of its jobs."""

    def phase(self, name: str, group: str) -> None: ...


class _Phases:
    def __init__(self, spark: SparkSession, run_id: str, progress: Progress | None) -> None:
        self.spark = spark
        self.run_id = run_id
        self.progress = progress
        self.groups: dict[str, str] = {}
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        group = f"{self.run_id}:{name}"
        self.groups[name] = group
        self.spark.sparkContext.setJobGroup(group, f"thimble-etl {name}", interruptOnCancel=True)
        if self.progress is not None:
            self.progress.phase(name, group)
        start = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.monotonic() - start

    def job_counts(self) -> dict[str, int]:
        tracker = self.spark.sparkContext.statusTracker()
        return {name: len(tracker.getJobIdsForGroup(group)) for name, group in self.groups.items()}


@contextmanager
def spark_errors(table: str) -> Iterator[None]:
    """Report a Spark failure as one readable error; the table stays at its previous version."""
    try:
        yield
    except Exception as exc:
        failure = spark_failure(exc)
        if failure is None:
            raise
        raise SparkJobError(table, failure) from None


def new_run_id() -> str:
    """A sortable, unique run id: ``20260101T120000Z-1a2b3c``."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def _settings(settings: ThimbleSettings | None) -> ThimbleSettings:
    return settings if settings is not None else load_settings(EtlSettings)


def _etl_names(settings: ThimbleSettings, table: str) -> tuple[str, str]:
    etl = getattr(settings, "etl", None)
    metrics_table = etl.metrics_table if etl is not None else "thimble_quality"
    suffix = etl.quarantine_suffix if etl is not None else "_quarantine"
    return _tables.qualified(metrics_table, settings), f"{table}{suffix}"


SNAPSHOT_PARTITIONS = "spark.databricks.delta.snapshotPartitions"


def tune_local(spark: SparkSession) -> None:
    """On a local master, rebuild Delta snapshots with as many partitions as cores (Delta's default, 50,
    is sized for clusters and makes every small commit slow); an explicit setting wins."""
    master = spark.sparkContext.master or ""
    if master.startswith("local") and spark.conf.get(SNAPSHOT_PARTITIONS, None) is None:
        spark.conf.set(SNAPSHOT_PARTITIONS, str(max(1, spark.sparkContext.defaultParallelism)))


def _session(spark: SparkSession | None, settings: ThimbleSettings) -> SparkSession:
    if spark is None:
        from thimble.common.spark import build_spark_session

        spark = build_spark_session(settings, app_name="thimble-etl")
    tune_local(spark)
    return spark


def run_table(
    config: TableConfig | str | Path,
    spark: SparkSession | None = None,
    settings: ThimbleSettings | None = None,
    run_id: str | None = None,
    progress: Progress | None = None,
) -> RunResult:
    """Load one table as its config describes; return what happened (never half-written)."""
    cfg = config if isinstance(config, TableConfig) else load_table_config(config)
    settings = _settings(settings)
    spark = _session(spark, settings)
    table = _tables.qualified(cfg.table, settings)
    run_id = run_id or new_run_id()
    phases = _Phases(spark, run_id, progress)
    started = time.monotonic()
    with bind_context(table=table, run_id=run_id), spark_errors(table):
        with phases("read"):
            batch = read_source(spark, cfg, settings, table)
        if batch.df is None:
            log.info("nothing new to load: %s", batch.description)
            current = _tables.version(spark, table)
            return RunResult(
                table, run_id, "no_new_data", current, current, cfg.config_hash(), source=batch.description
            )
        types = {f.name: f.dataType.simpleString() for f in batch.df.schema.fields}
        problems = check_columns(cfg, dict(types))
        if problems:
            raise ConfigError(problems, source=f"config of {table} (against its source)")
        spec = WriteSpec(
            mode=cfg.write.mode,
            keys=tuple(cfg.write.keys),
            partition_by=tuple(cfg.write.partition_by),
            journal=cfg.journal,
            evolution=cfg.schema_.evolution,
            allow_missing_columns=cfg.schema_.allow_missing_columns,
        )
        result = _load(
            spark, settings, table, batch.df, spec, cfg.cleanse, effective_rules(cfg), cfg.quality,
            run_id, cfg.config_hash(), batch.progress, phases,
        )  # fmt: skip
    result.seconds = time.monotonic() - started
    result.source = batch.description
    return result


def write_dataframe(
    df: DataFrame,
    table: str,
    mode: WriteMode = "append",
    keys: Sequence[str] = (),
    partition_by: Sequence[str] = (),
    journal: JournalConfig | Mapping[str, Any] | None = None,
    quality: QualityConfig | Mapping[str, Any] | None = None,
    run_id: str | None = None,
    settings: ThimbleSettings | None = None,
    allow_new_columns: bool = False,
    progress: Progress | None = None,
    metadata: Mapping[str, Any] | None = None,
    overwrite_schema: bool = False,
    allow_missing_columns: bool = False,
) -> RunResult:
    """Write a DataFrame produced elsewhere into a warehouse table, with the same guarantees as a run.

    Null keys (and duplicate keys for ``merge``) go to quarantine; ``quality`` checks gate the write.
    ``metadata`` (JSON-able) is recorded in the commit, under ``thimble.metadata``, and shown by ``history()``.
    ``overwrite_schema`` (``mode="overwrite"`` only) replaces the whole table, its schema included.
    ``allow_missing_columns`` writes the table's columns that ``df`` lacks as null (otherwise it fails).
    """
    from thimble.etl.config import NotNullRule, UniqueRule

    settings = _settings(settings)
    spark = _session(df.sparkSession, settings)
    name = _tables.qualified(table, settings)
    journal_cfg = JournalConfig.model_validate(journal) if isinstance(journal, Mapping) else journal
    quality_cfg = (
        QualityConfig.model_validate(quality) if isinstance(quality, Mapping) else quality or QualityConfig()
    )
    if mode == "journal" and journal_cfg is None:
        raise ConfigError(["mode 'journal' needs journal={'keys': [...]}"], source="write_dataframe")
    if mode == "merge" and not keys:
        raise ConfigError(["mode 'merge' needs keys"], source="write_dataframe")
    if overwrite_schema and mode != "overwrite":
        raise ConfigError(
            [f"overwrite_schema needs mode 'overwrite', not '{mode}'"], source="write_dataframe"
        )
    caller = _caller_metadata(metadata)
    key_list = list(journal_cfg.keys) if journal_cfg is not None else list(keys)
    rules: list[Rule] = []
    if key_list:
        rules.append(NotNullRule(rule="not_null", columns=key_list, name="keys are not null"))
        if journal_cfg is None or journal_cfg.order_by is None:
            rules.append(UniqueRule(rule="unique", columns=key_list, name="keys are unique in the batch"))
    spec = WriteSpec(
        mode=mode,
        keys=tuple(keys),
        partition_by=tuple(partition_by),
        journal=journal_cfg,
        evolution="allow_new_columns" if allow_new_columns else "fail",
        overwrite_schema=overwrite_schema,
        allow_missing_columns=allow_missing_columns,
    )
    run_id = run_id or new_run_id()
    started = time.monotonic()
    with bind_context(table=name, run_id=run_id), spark_errors(name):
        result = _load(
            spark,
            settings,
            name,
            df,
            spec,
            [],
            rules,
            quality_cfg,
            run_id,
            "",
            {},
            _Phases(spark, run_id, progress),
            caller,
        )
    result.seconds = time.monotonic() - started
    result.source = "DataFrame"
    return result


def _caller_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """``metadata`` as a JSON object, or a :class:`ConfigError` naming what cannot be one."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ConfigError(
            [f"metadata must be a mapping, not {type(metadata).__name__}"], source="write_dataframe"
        )
    out = dict(metadata)
    bad = [repr(k) for k in out if not isinstance(k, str)]
    if bad:
        raise ConfigError([f"metadata keys must be strings: {', '.join(bad)}"], source="write_dataframe")
    try:
        json.dumps(out, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            [f"metadata must be JSON (str, numbers, bools, null, lists, mappings): {exc}"],
            source="write_dataframe",
        ) from None
    return out


def _history(spark: SparkSession, metrics_table: str, table: str) -> Any:
    def past(metric: str, runs: int) -> list[float]:
        if not _tables.exists(spark, metrics_table):
            return []
        from pyspark.sql import functions as F

        recorded = spark.table(metrics_table).filter(F.col("table") == table)
        blocked = recorded.filter((F.col("kind") == "check") & (F.col("status") == "fail")).select("run_id")
        rows = (
            recorded.filter(
                (F.col("kind") == "metric") & (F.col("name") == metric) & F.col("value").isNotNull()
            )
            .join(blocked, "run_id", "left_anti")
            .orderBy(F.col("run_at").desc())
            .limit(runs)
            .select("value")
            .collect()
        )
        return [float(r[0]) for r in rows]

    return past


def _append_metrics(spark: SparkSession, rows: list[tuple[object, ...]], table: str) -> None:
    if _tables.exists(spark, table) and _tables.append_rows(spark, table, rows):
        return
    # A few dozen rows: one file (one task), not one per core.
    _append(spark, spark.createDataFrame(rows, METRICS_SCHEMA).coalesce(1), table)


def _append(spark: SparkSession, df: DataFrame, table: str) -> None:
    if _tables.exists(spark, table):
        df.writeTo(table).append()
    else:
        _tables.create_from(df, table, [])


def _load(
    spark: SparkSession,
    settings: ThimbleSettings,
    table: str,
    source: DataFrame,
    spec: WriteSpec,
    steps: Sequence[CleanseStep],
    rules: Sequence[Rule],
    quality: QualityConfig,
    run_id: str,
    config_hash: str,
    progress_meta: dict[str, Any],
    phases: _Phases,
    caller: dict[str, Any] | None = None,
) -> RunResult:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    if _one_pass_possible(spark, table, spec, steps, rules, quality, progress_meta):
        observed = observe_metrics(source, quality.metrics)
        if observed is not None:
            return _load_in_one_pass(
                spark, settings, table, observed, spec, quality, run_id, config_hash, phases, caller
            )
    metrics_table, quarantine_table = _etl_names(settings, table)
    run_at = datetime.now(UTC)
    before = _tables.version(spark, table)
    result = RunResult(table, run_id, "unchanged", before, before, config_hash)
    cached: list[DataFrame] = []
    try:
        if steps:
            with phases("read"):
                # Cleanse may drop rows, so count what was read first (a file source: Parquet footers only).
                result.rows_read = source.count()
        with phases("validate"):
            # Everything below reads these cached rows: the source (a DataFrame given to write_dataframe
            # may be costly, e.g. model scoring) is evaluated once.
            flagged = flag(cleanse(source, steps), rules).persist(StorageLevel.MEMORY_AND_DISK)
            cached.append(flagged)
            row = flagged.agg(F.count(F.lit(1)), F.sum(F.when(F.size(FAILED) > 0, 1).otherwise(0))).first()
            assert row is not None
            result.rows_cleansed, result.rows_quarantined = int(row[0]), int(row[1] or 0)
            if not steps:
                result.rows_read = result.rows_cleansed
            valid = passing(flagged)
            prepared = prepare(spark, valid, table, spec, run_at, snapshot=flagged)
            if prepared.plan is not None:
                prepared.df = prepared.df.persist(StorageLevel.MEMORY_AND_DISK)
                cached.append(prepared.df)
                counts = count(prepared)
                assert spec.journal is not None
                check_conflicts(prepared.plan, counts["conflict"], spec.journal, table)
            else:
                counts = {"inserted": result.rows_cleansed - result.rows_quarantined}
        with phases("quality"):
            values = compute_metrics(valid, quality.metrics)
        rejected = counts.get("late", 0) + counts.get("conflict", 0)
        values.update(
            {
                "rows_read": float(result.rows_read),
                "rows_cleansed": float(result.rows_cleansed),
                "rows_quarantined": float(result.rows_quarantined + rejected),
            }
        )
        result.metrics = values
        with phases("checks"):
            result.checks = evaluate(quality.checks, values, _history(spark, metrics_table, table))
            if spec.journal is not None and spec.journal.deletes == "close" and counts.get("closed"):
                open_keys = spark.table(table).filter(F.col("is_current")).count()
                guard = close_guard(counts["closed"], open_keys, spec.journal)
                result.checks.append(guard)
                values[CLOSE_GUARD] = guard.value
        blocked = any(c.status == "fail" for c in result.checks)
        with phases("quarantine"):
            if result.rows_quarantined or rejected:
                bad = quarantine_rows(flagged, table, run_id, run_at)
                if rejected and prepared.plan is not None:
                    journal_rows = prepared.plan.rejected(FAILED)
                    bad = bad.unionByName(quarantine_rows(journal_rows, table, run_id, run_at))
                _append(spark, bad, quarantine_table)
                result.rows_quarantined += rejected
        changes = counts.get("inserted", 0) + counts.get("updated", 0) + counts.get("closed", 0)
        # Replacing a table is a change even with no rows: its old rows must go.
        replace = spec.overwrite_schema and before is not None
        if blocked:
            result.status = "blocked"
            log.warning("a failing check blocked the write; %s stays at version %s", table, before)
        elif changes or replace or (progress_meta and before is not None):
            meta = _commit_meta(
                run_id,
                config_hash,
                spec,
                {**counts, "read": result.rows_read, "quarantined": result.rows_quarantined},
                result.check_counts,
                progress_meta,
                caller,
            )
            with phases("write"):
                if changes or replace:
                    version, committed = write(spark, prepared, table, spec, meta, before)
                else:
                    version, committed = _record_progress(spark, table, meta)
            result.version = version
            result.status = "committed" if committed else "unchanged"
            result.inserted, result.updated, result.closed = (
                counts.get(k, 0) for k in ("inserted", "updated", "closed")
            )
            if spec.mode == "merge" and committed:
                from thimble.etl.writer import merge_counts

                result.inserted, result.updated = (
                    merge_counts(spark, table, version).get(k, 0) for k in ("inserted", "updated")
                )
        with phases("metrics"):
            if result.metrics or result.checks:
                rows = metric_rows(
                    table, run_id, result.version, result.committed, run_at, result.metrics, result.checks
                )
                _append_metrics(spark, rows, metrics_table)
    finally:
        for df in cached:
            df.unpersist()
    result.spark_jobs = phases.job_counts()
    result.phase_seconds = {name: round(seconds, 2) for name, seconds in phases.seconds.items()}
    log.info(
        "%s: %s at version %s (read %d, quarantined %d, inserted %d, updated %d, closed %d)",
        table, result.status, result.version, result.rows_read, result.rows_quarantined,
        result.inserted, result.updated, result.closed,
    )  # fmt: skip
    return result


def _one_pass_possible(
    spark: SparkSession,
    table: str,
    spec: WriteSpec,
    steps: Sequence[CleanseStep],
    rules: Sequence[Rule],
    quality: QualityConfig,
    progress_meta: dict[str, Any],
) -> bool:
    """Whether nothing must be known before the write: then the rows are written as they are computed.

    No cleanse step (rows read = rows written), no validation rule (nothing to quarantine), no check
    that can block (``severity: fail``), no source progress to record, and a write that appends to (or
    replaces) a table that exists: creating one is a CREATE TABLE AS SELECT, which Spark runs outside
    the write's own execution, so the metrics it observes would not be reported.
    """
    if steps or rules or progress_meta:
        return False
    if any(check.severity == "fail" for check in quality.checks):
        return False
    if not (spec.mode == "append" or (spec.mode == "overwrite" and spec.overwrite_schema)):
        return False
    if spec.overwrite_schema and spec.partition_by:
        return False  # new partitioning: only a REPLACE TABLE changes it
    return _tables.exists(spark, table)


def _load_in_one_pass(
    spark: SparkSession,
    settings: ThimbleSettings,
    table: str,
    observed: ObservedMetrics,
    spec: WriteSpec,
    quality: QualityConfig,
    run_id: str,
    config_hash: str,
    phases: _Phases,
    caller: dict[str, Any] | None,
) -> RunResult:
    """Write as the rows are computed: no cache, no count first; metrics are observed during the write.

    The commit's counts cannot hold the number of rows (it is known once the rows are written):
    ``history()`` takes it from Delta's ``numOutputRows`` of the commit. Checks (none can block) are
    evaluated after the write and stored in the metrics table with the run's metrics.
    """
    metrics_table, _ = _etl_names(settings, table)
    run_at = datetime.now(UTC)
    result = RunResult(table, run_id, "unchanged", None, None, config_hash)
    # Checks are evaluated after this commit: their counts are in the metrics table, not in it.
    checks = None if quality.checks else result.check_counts
    meta = _commit_meta(run_id, config_hash, spec, {"quarantined": 0}, checks, {}, caller)
    with phases("write"):
        version = write_in_one_pass(spark, observed.df, table, spec, meta)
    with phases("quality"):
        measured = observed.values()
    if measured is None:
        raise EtlError(
            f"{table}: version {version} was written, but Spark did not report its quality metrics; "
            "they are not in the metrics table"
        )
    rows, values = measured
    if version is None:
        result.version = result.previous_version = _tables.version(spark, table)
    else:
        # Delta's log is linear: the version before this commit is the one it follows.
        result.version, result.previous_version, result.status = version, version - 1, "committed"
    result.rows_read = result.rows_cleansed = result.inserted = rows
    values.update({"rows_read": float(rows), "rows_cleansed": float(rows), "rows_quarantined": 0.0})
    result.metrics = values
    with phases("checks"):
        result.checks = evaluate(quality.checks, values, _history(spark, metrics_table, table))
    with phases("metrics"):
        rows_out = metric_rows(
            table, run_id, result.version, result.committed, run_at, result.metrics, result.checks
        )
        _append_metrics(spark, rows_out, metrics_table)
    result.spark_jobs = phases.job_counts()
    result.phase_seconds = {name: round(seconds, 2) for name, seconds in phases.seconds.items()}
    log.info(
        "%s: %s at version %s in one pass (inserted %d)",
        table,
        result.status,
        result.version,
        result.inserted,
    )
    return result


def _commit_meta(
    run_id: str,
    config_hash: str,
    spec: WriteSpec,
    counts: dict[str, int],
    checks: dict[str, int] | None,
    source: dict[str, Any],
    caller: dict[str, Any] | None,
) -> dict[str, Any]:
    """The ``thimble`` tag of a run's commit (``history()`` reads it back)."""
    meta: dict[str, Any] = {
        "run_id": run_id,
        "config_hash": config_hash,
        "mode": spec.mode,
        "package_version": __version__,
        "counts": counts,
        "source": source,
    }
    if checks is not None:
        meta["checks"] = checks
    if caller:
        meta["metadata"] = caller
    return meta


def _record_progress(spark: SparkSession, table: str, meta: dict[str, Any]) -> tuple[int | None, bool]:
    """Commit no rows but the source progress, so unchanged data is not read again."""
    empty = spark.table(table).limit(0)
    with _tables.commit_metadata(spark, meta):
        empty.writeTo(table).append()
    version = _tables.version(spark, table)
    return version, True
