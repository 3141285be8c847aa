"""A load: one batch on its way into one table, in phases (read, cleanse, validate, plan, check, commit).

Two strategies write it. :class:`GatedLoad` knows everything before it commits: rows are counted, the
journal is planned, metrics are measured and a failing check blocks the commit. :class:`OnePassLoad`
writes the rows as they are computed and observes the metrics during the write, when nothing has to be
known first. :meth:`Load.start` picks one.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from thimble.common.config import ThimbleSettings
from thimble.common.errors import spark_failure
from thimble.common.logging import get_logger
from thimble.common.spark import sql_string
from thimble.common.text import cut
from thimble.etl import _connect, _tables
from thimble.etl.__about__ import __version__
from thimble.etl._phases import Phases
from thimble.etl._sql import quote_table
from thimble.etl.cleanse import cleanse, keeps_every_row
from thimble.etl.config import CheckConfig, CleanseStep, MetricConfig, QualityConfig, Rule
from thimble.etl.errors import EtlError, concurrent_change
from thimble.etl.journal import CLOSE_GUARD, TALLY
from thimble.etl.quality import (
    METRICS_SCHEMA,
    CheckResult,
    History,
    ObservedMetrics,
    compute_metrics,
    evaluate,
    metric_rows,
    observe_metrics,
)
from thimble.etl.validate import FAILED, flag, passes, passing, quarantine_rows
from thimble.etl.writer import Prepared, WriteSpec, merge_counts, prepare, write, write_in_one_pass

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = get_logger(__name__)

RunStatus = Literal["committed", "blocked", "unchanged", "no_new_data"]
# How Delta and the metastore refuse to create a table that another run has just created.
CREATED_BY_ANOTHER = frozenset(
    {
        "DELTA_PROTOCOL_CHANGED",
        "DELTA_CREATE_TABLE_WITH_NON_EMPTY_LOCATION",
        "TABLE_OR_VIEW_ALREADY_EXISTS",
        "DELTA_TABLE_ALREADY_EXISTS",
    }
)
CREATED_BY_ANOTHER_WAIT_S = 30.0
# Tallies of the rows that passed and failed validation (beside the journal's kinds).
VALID, QUARANTINED = "validate:passed", "validate:failed"
# The commit's tag of what the metrics table is to hold for it: the rows themselves (gated), or the metrics
# and checks to measure on the committed rows (one pass: known only once they are written).
QUALITY_TAG = "quality"
# The app id of a version's idempotent metrics write, before the table's name (the version: its txnVersion).
METRICS_APP_ID = "thimble-metrics"
# The same for the quarantine rows a version's run set aside, published from their staging table.
QUARANTINE_APP_ID = "thimble-quarantine"
# The staging table of a quarantine table's rows, after its name: a run's rows wait there until its commit.
STAGED_SUFFIX = "_staged"
# How many of a table's latest commits a run looks through for metrics a stopped run did not record.
RECOVERED_COMMITS = 20


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


@dataclass(frozen=True)
class LoadSpec:
    """What a load does to a batch, whichever way it is written.

    ``table`` is qualified; ``source_progress`` is what the source read (recorded in the commit, so the
    next run reads on from there); ``metadata`` is the caller's, recorded in the commit too.
    """

    table: str
    write: WriteSpec
    steps: tuple[CleanseStep, ...] = ()
    rules: tuple[Rule, ...] = ()
    quality: QualityConfig = field(default_factory=QualityConfig)
    config_hash: str = ""
    source_progress: Mapping[str, Any] = field(default_factory=dict)
    source_read: Mapping[str, Any] = field(default_factory=dict)
    """What else the source read (a source table's version): recorded beside the progress, never read back."""
    progress_from: int | None = None
    """The table's version the progress was read at: the commit is Delta's idempotent write of that load,
    so of two runs that read the same progress (one killed, its write finished on a Spark Connect server;
    two started at once) only the first commits."""
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def load_once(self) -> tuple[str, int] | None:
        """Delta's ``(txnAppId, txnVersion)`` of this load: the next version after ``progress_from``."""
        if not self.source_progress or self.progress_from is None:
            return None
        return f"thimble-etl:{self.table}", self.progress_from + 1

    @property
    def needs_nothing_first(self) -> bool:
        """Whether nothing must be known before the write, so the rows can be written as computed.

        No cleanse step (rows read = rows written), no validation rule (nothing to quarantine), no check
        that can block (``severity: fail``), no source progress to record, and a write that appends to (or
        replaces) a table: creating one is a CREATE TABLE AS SELECT, which Spark runs outside the write's
        own execution, so the metrics it observes would not be reported (the caller checks existence).
        """
        if self.steps or self.rules or self.source_progress:
            return False
        if any(check.severity == "fail" for check in self.quality.checks):
            return False
        spec = self.write
        if not (spec.mode == "append" or (spec.mode == "overwrite" and spec.overwrite_schema)):
            return False
        return not (spec.overwrite_schema and spec.partition_by)  # new partitioning: a REPLACE TABLE

    def commit_metadata(
        self,
        run_id: str,
        counts: dict[str, int],
        checks: dict[str, int] | None,
        quality: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The ``thimble`` tag of a run's commit (``history()`` reads it back); ``quality`` is what the
        metrics table is to hold for the commit (see :func:`finish_stopped_runs`)."""
        meta: dict[str, Any] = {
            "run_id": run_id,
            "config_hash": self.config_hash,
            "mode": self.write.mode,
            "package_version": __version__,
            "counts": counts,
            "source": {**self.source_read, **self.source_progress},
        }
        if checks is not None:
            meta["checks"] = checks
        if self.metadata:
            meta["metadata"] = dict(self.metadata)
        if quality is not None:
            meta[QUALITY_TAG] = quality
        return meta


@dataclass
class Planned:
    """A gated load's plan: what will be written, the rows each kind of change touches, and the tally
    they were counted from."""

    prepared: Prepared
    counts: dict[str, int]
    tally: dict[str, int]
    observed: ObservedMetrics | None = None
    """The quality metrics of the rows that passed, observed by the job that counted the tally."""

    @property
    def rejected(self) -> int:
        """Rows a journal rule sets aside (late, conflicting)."""
        return self.counts.get("late", 0) + self.counts.get("conflict", 0)


class Load(ABC):
    """One run of a :class:`LoadSpec` over a batch; :meth:`run` goes through the phases once."""

    def __init__(
        self,
        spark: SparkSession,
        settings: ThimbleSettings,
        spec: LoadSpec,
        source: DataFrame,
        phases: Phases,
    ) -> None:
        self.spark = spark
        self.spec = spec
        self.source = source
        self.phases = phases
        self.table = spec.table
        self.metrics_table, self.quarantine_table = etl_tables(settings, spec.table)
        self.run_at = datetime.now(UTC)
        self.result = RunResult(spec.table, phases.run_id, "unchanged", None, None, spec.config_hash)
        self._staged = False  # this run's quarantine rows wait in the staging table

    @staticmethod
    def start(
        spark: SparkSession, settings: ThimbleSettings, spec: LoadSpec, source: DataFrame, phases: Phases
    ) -> Load:
        """The load of ``source`` by ``spec``: in one pass when nothing must be known first, else gated."""
        if spec.needs_nothing_first and _tables.exists(spark, spec.table):
            observed = observe_metrics(source, spec.quality.metrics)
            if observed is not None:
                return OnePassLoad(spark, settings, spec, observed, phases)
        return GatedLoad(spark, settings, spec, source, phases)

    @property
    def run_id(self) -> str:
        return self.phases.run_id

    @abstractmethod
    def run(self) -> RunResult:
        """Load the batch; return what happened (the table is never half-written)."""

    def evaluate_checks(self, values: dict[str, float | None]) -> list[CheckResult]:
        return evaluate(
            self.spec.quality.checks, values, _past_values(self.spark, self.metrics_table, self.table)
        )

    def record(self) -> None:
        """Publish the run's quarantine rows and store its metrics and check results in the metrics table,
        after finishing what the runs of the table's earlier commits left undone when they stopped
        (:func:`finish_stopped_runs`): a version's rows are published, and its metrics stored, after those
        of every earlier version (Delta's idempotent write skips a version below the latest it holds)."""
        result = self.result
        with self.phases("metrics"):
            finish_stopped_runs(
                self.spark, self.table, self.metrics_table, self.quarantine_table, self.run_id
            )
        self.publish_quarantine()
        with self.phases("metrics"):
            if result.metrics or result.checks:
                rows = metric_rows(
                    self.table, self.run_id, result.version, result.committed, self.run_at, result.metrics,
                    result.checks,
                )  # fmt: skip
                committed = self._committed_version()
                with self._after_commit(f"its metrics could not be recorded in {self.metrics_table}"):
                    of = None if committed is None else (self.table, committed)
                    _append_metrics(self.spark, rows, self.metrics_table, of=of)

    def _committed_version(self) -> int | None:
        return self.result.version if self.result.committed else None

    @contextmanager
    def _after_commit(self, failed: str) -> Iterator[None]:
        """A Spark failure inside, once this run committed, is one line naming the committed version and
        what ``failed``; before a commit (or not Spark's), it is raised as it is."""
        try:
            yield
        except Exception as exc:
            failure = spark_failure(exc)
            committed = self._committed_version()
            if failure is None or committed is None:
                raise
            raise EtlError(
                f"{self.table}: version {committed} was committed, but {failed}: {failure.reason}"
            ) from None

    def publish_quarantine(self) -> None:
        """Move the staged quarantine rows into the quarantine table: once per committed version (Delta's
        idempotent write, which a later run finishing this one may make first); at once when nothing was
        committed (a blocked run's rows are there to be inspected); never when another run committed this
        load first (that run's rows are the load's)."""
        if not self._staged:
            return
        committed = self._committed_version()
        failed = (
            f"its quarantine rows could not be published in {self.quarantine_table} "
            "(the next run publishes them)"
        )
        with self.phases("quarantine"), self._after_commit(failed):
            if self.result.status != "no_new_data":
                of = None if committed is None else (self.table, committed)
                _publish_quarantine(self.spark, self.quarantine_table, self.run_id, of)
            _drop_staged(self.spark, self.quarantine_table, [self.run_id])
        self._staged = False

    def _forget_staged(self) -> None:
        """A run that failed before its commit leaves nothing staged (its re-run stages the rows again); one
        that failed after it leaves its rows for the next run to publish."""
        if not self._staged or self.result.status == "committed":
            return
        try:
            _drop_staged(self.spark, self.quarantine_table, [self.run_id])
        except Exception as exc:  # the failure being raised is the one to report
            failure = spark_failure(exc)
            reason = failure.reason if failure is not None else f"{type(exc).__name__}: {exc}"
            log.warning(
                "%s: the staged quarantine rows of run %s stay: %s", self.table, self.run_id, cut(reason, 200)
            )

    def finish(self) -> RunResult:
        self.result.spark_jobs = self.phases.job_counts()
        self.result.phase_seconds = self.phases.rounded_seconds()
        return self.result


class GatedLoad(Load):
    """Everything is known before the commit: the batch is read once into a cache, cleansed, validated,
    planned and measured; a failing check blocks the commit; quarantine and metrics are written either way."""

    def __init__(
        self,
        spark: SparkSession,
        settings: ThimbleSettings,
        spec: LoadSpec,
        source: DataFrame,
        phases: Phases,
    ) -> None:
        super().__init__(spark, settings, spec, source, phases)
        self.before = _tables.version(spark, spec.table)
        self.result.version = self.result.previous_version = self.before
        self._cached: list[DataFrame] = []

    def run(self) -> RunResult:
        try:
            self.read()
            flagged = self.validate(self.cleanse())
            planned = self.plan(flagged)
            self.check(passing(flagged), planned)
            self.quarantine(flagged, planned)
            self.commit(planned)
            self.record()
        except Exception:
            self._forget_staged()
            raise
        finally:
            for df in self._cached:
                df.unpersist()
        result = self.finish()
        log.info(
            "%s: %s at version %s (read %d, quarantined %d, inserted %d, updated %d, closed %d)",
            self.table, result.status, result.version, result.rows_read, result.rows_quarantined,
            result.inserted, result.updated, result.closed,
        )  # fmt: skip
        return result

    def _cache(self, df: DataFrame) -> DataFrame:
        from pyspark import StorageLevel

        cached = df.persist(StorageLevel.MEMORY_AND_DISK)
        self._cached.append(cached)
        return cached

    def read(self) -> None:
        """Count the rows read when cleansing may drop some (a file source: Parquet footers only); when
        every step keeps every row, the rows read are the rows cleansed, counted with the validation."""
        if not keeps_every_row(self.spec.steps):
            with self.phases("read"):
                self.result.rows_read = self.source.count()

    def cleanse(self) -> DataFrame:
        return cleanse(self.source, self.spec.steps)

    def validate(self, cleansed: DataFrame) -> DataFrame:
        """Flag each row with the rules it fails, into a cache every later phase reads: the source (a
        DataFrame given to ``write_dataframe`` may be costly, e.g. model scoring) is evaluated once. The
        flagged rows are counted with the plan's own counts, in one Spark job."""
        with self.phases("validate"):
            return self._cache(flag(cleansed, self.spec.rules))

    def plan(self, flagged: DataFrame) -> Planned:
        """What the write will do and how many rows each kind of change touches; a journal is classified
        against the table's current versions. One Spark job counts the rows that passed and failed
        validation and those the plan touches, and measures the quality metrics of the rows that passed
        where Spark can observe them in that job."""
        from pyspark.sql import functions as F

        with self.phases("validate"):
            valid = passing(flagged)
            metrics = self.spec.quality.metrics
            observed = observe_metrics(valid, metrics) if metrics else None
            prepared = prepare(
                self.spark,
                valid,
                self.table,
                self.spec.write,
                self.run_at,
                snapshot=flagged,
                before=self.before,
                passed=passes(),
            )
            if observed is None:
                validated = flagged.select(
                    F.when(F.size(FAILED) > 0, F.lit(QUARANTINED)).otherwise(F.lit(VALID)).alias(TALLY)
                )
            else:
                validated = observed.df.select(F.lit(VALID).alias(TALLY)).unionByName(
                    flagged.filter(F.size(FAILED) > 0).select(F.lit(QUARANTINED).alias(TALLY))
                )
            plan = prepared.plan
            if plan is not None:
                prepared.df = plan.classified = self._cache(plan.classified)
                validated = validated.unionByName(plan.tallies())
            tally = _count_tallies(validated, _connect.default_parallelism(self.spark))
            if plan is not None:
                tally = plan.settle(tally)
            result = self.result
            result.rows_quarantined = tally.get(QUARANTINED, 0)
            result.rows_cleansed = result.rows_quarantined + tally.get(VALID, 0)
            if keeps_every_row(self.spec.steps):
                result.rows_read = result.rows_cleansed
            if plan is None:
                return Planned(prepared, {"inserted": tally.get(VALID, 0)}, tally, observed)
            counts = plan.counts(tally)
            plan.refuse_conflicts(counts, self.table)
        return Planned(prepared, counts, tally, observed)

    def check(self, valid: DataFrame, planned: Planned) -> None:
        """The metrics of the rows to write (observed while the plan was counted, else one fused
        aggregation) and the checks on them, the journal's included."""
        with self.phases("quality"):
            observed = planned.observed.values(timeout=2.0) if planned.observed is not None else None
            if observed is not None and observed[0] == planned.tally.get(VALID, 0):
                values = observed[1]
            else:
                values = compute_metrics(valid, self.spec.quality.metrics)
        result = self.result
        values.update(
            {
                "rows_read": float(result.rows_read),
                "rows_cleansed": float(result.rows_cleansed),
                "rows_quarantined": float(result.rows_quarantined + planned.rejected),
            }
        )
        result.metrics = values
        with self.phases("checks"):
            result.checks = self.evaluate_checks(values)
            plan = planned.prepared.plan
            guard = plan.close_guard(planned.tally) if plan is not None else None
            if guard is not None:
                result.checks.append(guard)
                values[CLOSE_GUARD] = guard.value

    def quarantine(self, flagged: DataFrame, planned: Planned) -> None:
        """Stage the rows that failed a rule, or a journal rule, for the quarantine table: they are
        published once the commit is made (:meth:`publish_quarantine`)."""
        rejected = planned.rejected
        with self.phases("quarantine"):
            if self.result.rows_quarantined or rejected:
                bad = quarantine_rows(flagged, self.table, self.run_id, self.run_at)
                plan = planned.prepared.plan
                if rejected and plan is not None:
                    bad = bad.unionByName(
                        quarantine_rows(plan.rejected(FAILED), self.table, self.run_id, self.run_at)
                    )
                _append(self.spark, bad, staged_table(self.quarantine_table))
                self._staged = True
                self.result.rows_quarantined += rejected

    def commit(self, planned: Planned) -> None:
        """Write in one commit unless a check failed; with no change, record only the source's progress."""
        result, spec, prepared, counts = self.result, self.spec, planned.prepared, planned.counts
        changes = counts.get("inserted", 0) + counts.get("updated", 0) + counts.get("closed", 0)
        # Replacing a table is a change even with no rows: its old rows must go.
        replace = spec.write.overwrite_schema and self.before is not None
        if any(c.status == "fail" for c in result.checks):
            result.status = "blocked"
            log.warning("a failing check blocked the write; %s stays at version %s", self.table, self.before)
            return
        if not (changes or replace or (spec.source_progress and self.before is not None)):
            return
        meta = spec.commit_metadata(
            self.run_id,
            {**counts, "read": result.rows_read, "quarantined": result.rows_quarantined},
            result.check_counts,
            {
                "run_at": self.run_at.isoformat(),
                "metrics": result.metrics,
                "checks": [[c.name, c.value, c.severity, c.status, c.detail] for c in result.checks],
            },
        )
        try:
            with self.phases("write"):
                if changes or replace:
                    version, committed = write(
                        self.spark, prepared, self.table, spec.write, meta, self.before, spec.load_once
                    )
                else:
                    version, committed = _record_progress(self.spark, self.table, meta, spec.load_once)
        except _tables.AlreadyCommitted:
            result.version = _tables.version(self.spark, self.table)
            result.status = "no_new_data"
            log.warning(
                "%s: another run committed this load first (the table is at version %s); this run wrote nothing",
                self.table,
                result.version,
            )
            return
        result.version = version
        result.status = "committed" if committed else "unchanged"
        result.inserted, result.updated, result.closed = (
            counts.get(k, 0) for k in ("inserted", "updated", "closed")
        )
        if spec.write.mode == "merge" and committed:
            merged = merge_counts(self.spark, self.table, version)
            result.inserted, result.updated = (merged.get(k, 0) for k in ("inserted", "updated"))


class OnePassLoad(Load):
    """Write as the rows are computed: no cache, no count first; metrics are observed during the write.

    The commit's counts cannot hold the number of rows (it is known once the rows are written):
    ``history()`` takes it from Delta's ``numOutputRows`` of the commit. Checks (none can block) are
    evaluated after the write and stored in the metrics table with the run's metrics.
    """

    def __init__(
        self,
        spark: SparkSession,
        settings: ThimbleSettings,
        spec: LoadSpec,
        observed: ObservedMetrics,
        phases: Phases,
    ) -> None:
        super().__init__(spark, settings, spec, observed.df, phases)
        self.observed = observed

    def run(self) -> RunResult:
        self.commit()
        self.check()
        self.record()
        result = self.finish()
        log.info(
            "%s: %s at version %s in one pass (inserted %d)",
            self.table,
            result.status,
            result.version,
            result.inserted,
        )
        return result

    def commit(self) -> None:
        # Checks are evaluated after this commit: their counts are in the metrics table, not in it.
        checks = None if self.spec.quality.checks else self.result.check_counts
        quality = self.spec.quality
        meta = self.spec.commit_metadata(
            self.run_id,
            {"quarantined": 0},
            checks,
            {
                "run_at": self.run_at.isoformat(),
                "measure": {
                    "metrics": [m.model_dump(mode="json", exclude_none=True) for m in quality.metrics],
                    "checks": [c.model_dump(mode="json", exclude_none=True) for c in quality.checks],
                },
            },
        )
        with self.phases("write"):
            version = write_in_one_pass(self.spark, self.source, self.table, self.spec.write, meta)
        result = self.result
        if version is None:
            result.version = result.previous_version = _tables.version(self.spark, self.table)
        else:
            # Delta's log is linear: the version before this commit is the one it follows.
            result.version, result.previous_version, result.status = version, version - 1, "committed"

    def check(self) -> None:
        """The metrics the write observed, and the checks on them."""
        with self.phases("quality"):
            measured = self.observed.values()
        if measured is None:
            raise EtlError(
                f"{self.table}: version {self.result.version} was written, but Spark did not report its "
                "quality metrics; they are not in the metrics table"
            )
        rows, values = measured
        result = self.result
        result.rows_read = result.rows_cleansed = result.inserted = rows
        values.update({"rows_read": float(rows), "rows_cleansed": float(rows), "rows_quarantined": 0.0})
        result.metrics = values
        with self.phases("checks"):
            result.checks = self.evaluate_checks(values)


def _count_tallies(tallies: DataFrame, tasks: int | None) -> dict[str, int]:
    """How many rows hold each value of the column :data:`TALLY`: one Spark job, of at most ``tasks``
    tasks when given. The tallies are a union of several reads of a batch, each of which would otherwise
    run as many short tasks as it has partitions."""
    from pyspark.sql import functions as F

    if tasks:
        tallies = tallies.coalesce(tasks)
    rows = tallies.groupBy(TALLY).agg(F.count(F.lit(1)).alias("n")).collect()
    return {row[TALLY]: int(row["n"]) for row in rows}


def etl_tables(settings: ThimbleSettings, table: str) -> tuple[str, str]:
    """(metrics table, quarantine table) of ``table``."""
    etl = getattr(settings, "etl", None)
    metrics_table = etl.metrics_table if etl is not None else "thimble_quality"
    suffix = etl.quarantine_suffix if etl is not None else "_quarantine"
    return _tables.qualified(metrics_table, settings), f"{table}{suffix}"


def _past_values(spark: SparkSession, metrics_table: str, table: str) -> History:
    """A metric's values in the last committed runs of ``table``, newest first (for ``max_change``)."""

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


def _append_metrics(
    spark: SparkSession, rows: list[tuple[object, ...]], table: str, of: tuple[str, int] | None = None
) -> bool:
    """Append metrics rows to the metrics ``table``; whether they were written.

    ``of`` (a table and its committed version) makes the append Delta's idempotent write of that version's
    rows: when they are in the metrics table already (the run that committed the version and a later run
    recording it for a run it thought stopped can both try), nothing is written.
    """
    once = None if of is None else (f"{METRICS_APP_ID}:{of[0]}", of[1])
    if _tables.exists(spark, table):
        written = _tables.append_rows(spark, table, rows, once)
        if written is not None:
            return written
    return _append_as(spark, _metrics_frame(spark, rows), table, once, "metrics_of")


def _append_as(
    spark: SparkSession, rows: DataFrame, table: str, once: tuple[str, int] | None, tag: str
) -> bool:
    """Append ``rows`` to ``table``, creating it when missing; whether they were written. ``once`` makes
    it Delta's idempotent write (:func:`_append_once`), made after the table is created empty, so two runs
    creating it at the same moment still write the rows once."""
    if once is None:
        _append(spark, rows, table)
        return True
    if not _tables.exists(spark, table):
        _append(spark, rows.limit(0), table)
    return _append_once(spark, rows, table, once, tag)


def _append_once(spark: SparkSession, rows: DataFrame, table: str, once: tuple[str, int], tag: str) -> bool:
    """Delta's idempotent append of ``rows`` to ``table`` (which exists) as the commit ``once``: whether
    they were written (not when a commit of ``once`` is in the table already). Of two runs appending at
    once, Delta refuses the later one, which then finds the rows written. ``tag`` names the commit's kind
    in its ``thimble`` tag."""
    retried = False
    while True:
        try:
            with _tables.commit_metadata(spark, {tag: {"app_id": once[0], "version": once[1]}}, once=once):
                rows.writeTo(table).append()
            return True
        except _tables.AlreadyCommitted:
            return False
        except Exception as exc:
            if retried or concurrent_change(spark_failure(exc)) != "DELTA_CONCURRENT_TRANSACTION":
                raise
            retried = True


def staged_table(quarantine_table: str) -> str:
    """Where a run's quarantine rows wait for its commit."""
    return f"{quarantine_table}{STAGED_SUFFIX}"


def _publish_quarantine(
    spark: SparkSession, quarantine_table: str, run_id: str, of: tuple[str, int] | None
) -> bool:
    """Append the staged quarantine rows of ``run_id`` to ``quarantine_table``; whether they were
    written. ``of`` (a table and the version the run committed) makes it Delta's idempotent write of that
    version's rows."""
    from pyspark.sql import functions as F

    rows = spark.table(staged_table(quarantine_table)).filter(F.col("run_id") == run_id)
    once = None if of is None else (f"{QUARANTINE_APP_ID}:{of[0]}", of[1])
    return _append_as(spark, rows, quarantine_table, once, "quarantine_of")


def _drop_staged(spark: SparkSession, quarantine_table: str, run_ids: list[str]) -> None:
    """Delete the staged quarantine rows of ``run_ids`` (two runs deleting the same rows at once: both
    wanted them gone)."""
    staged = staged_table(quarantine_table)
    held = ", ".join(sql_string(run_id) for run_id in run_ids)
    try:
        spark.sql(f"DELETE FROM {quote_table(staged)} WHERE run_id IN ({held})")
    except Exception as exc:
        if concurrent_change(spark_failure(exc)) is None:
            raise


def _metrics_frame(spark: SparkSession, rows: list[tuple[object, ...]]) -> DataFrame:
    # A few dozen rows: one file (one task), not one per core.
    return spark.createDataFrame(rows, METRICS_SCHEMA).coalesce(1)


def _append(spark: SparkSession, df: DataFrame, table: str) -> None:
    if not _tables.exists(spark, table):
        try:
            _tables.create_from(df, table, [])
            return
        except Exception as exc:
            # Another run (of another table) created it since: this run's rows go after that run's.
            if not _created_by_another(spark, table, exc):
                raise
    df.writeTo(table).append()


def _created_by_another(spark: SparkSession, table: str, exc: Exception) -> bool:
    """Whether creating ``table`` failed because another run created it at the same moment.

    The other run's first commit is in the table's folder a moment before the table is in the
    metastore, so the table is awaited a little while.
    """
    failure = spark_failure(exc)
    if failure is None or failure.condition not in CREATED_BY_ANOTHER:
        return False
    deadline = time.monotonic() + CREATED_BY_ANOTHER_WAIT_S
    while not _tables.exists(spark, table):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


def _record_progress(
    spark: SparkSession, table: str, meta: dict[str, Any], once: tuple[str, int] | None
) -> tuple[int | None, bool]:
    """Commit no rows but the source progress, so unchanged data is not read again."""
    empty = spark.table(table).limit(0)
    with _tables.commit_metadata(spark, meta, once=once):
        empty.writeTo(table).append()
    return _tables.version(spark, table), True


def finish_stopped_runs(
    spark: SparkSession, table: str, metrics_table: str, quarantine_table: str, run_id: str | None = None
) -> int:
    """Finish what the runs of ``table``'s latest commits left undone when they stopped (killed, or
    failed) after their commit: publish the quarantine rows each staged, and record its metrics from what
    its commit's tag holds (the rows themselves, or, for a one-pass write, the metrics and checks,
    measured now on the rows that commit wrote). A run whose metrics are recorded is finished: they are
    its last write. ``run_id`` (this run) is left out. Returns the number of runs finished."""
    import json

    from pyspark.sql import functions as F

    if not _tables.exists(spark, table):
        return 0
    recent = spark.sql(f"DESCRIBE HISTORY {quote_table(table)} LIMIT {RECOVERED_COMMITS}")
    tagged: dict[str, tuple[int, dict[str, Any]]] = {}
    for row in recent.select("version", "userMetadata").collect():
        try:
            meta = json.loads(row["userMetadata"] or "{}").get("thimble") or {}
        except (ValueError, AttributeError):
            continue
        if (
            isinstance(meta, dict)
            and isinstance(meta.get(QUALITY_TAG), dict)
            and isinstance(meta.get("run_id"), str)
            and meta["run_id"] != run_id
        ):
            tagged.setdefault(meta["run_id"], (int(row["version"]), meta))
    if not tagged:
        return 0
    if _tables.exists(spark, metrics_table):
        held = spark.table(metrics_table).filter(
            (F.col("table") == table) & F.col("run_id").isin(list(tagged))
        )
        for row in held.select("run_id").distinct().collect():
            tagged.pop(row[0], None)
    _publish_stopped_quarantine(spark, table, quarantine_table, {r: v for r, (v, _) in tagged.items()})
    for stopped, (version, meta) in sorted(tagged.items(), key=lambda item: item[1][0]):
        try:
            rows = _tagged_rows(spark, table, metrics_table, stopped, version, meta)
        except (KeyError, TypeError, ValueError) as exc:  # a tag another tool (or release) wrote
            log.warning(
                "%s: version %s has no metrics rows and its quality tag cannot be read (%s: %s): "
                "they are not recorded", table, version, type(exc).__name__, cut(str(exc), 200),
            )  # fmt: skip
            continue
        except Exception as exc:  # its rows cannot be read again (no change data feed, vacuumed)
            failure = spark_failure(exc)
            if failure is None:
                raise
            log.warning(
                "%s: version %s has no metrics rows (its run %s stopped before it recorded them) and "
                "they cannot be measured again: %s", table, version, stopped, failure.reason,
            )  # fmt: skip
            continue
        if _append_metrics(spark, rows, metrics_table, of=(table, version)):
            log.warning(
                "%s: recorded the metrics of version %s, whose run %s had not recorded them",
                table,
                version,
                stopped,
            )
    return len(tagged)


def _publish_stopped_quarantine(
    spark: SparkSession, table: str, quarantine_table: str, stopped: dict[str, int]
) -> None:
    """Publish the staged quarantine rows of runs that stopped after committing (run id: its version)."""
    from pyspark.sql import functions as F

    staged = staged_table(quarantine_table)
    if not _tables.exists(spark, staged):
        return
    held = spark.table(staged).filter(F.col("run_id").isin(list(stopped))).select("run_id").distinct()
    runs = sorted((stopped[row[0]], row[0]) for row in held.collect())
    for version, run in runs:
        if _publish_quarantine(spark, quarantine_table, run, (table, version)):
            log.warning(
                "%s: published the quarantine rows of version %s, whose run %s had not published them",
                table,
                version,
                run,
            )
    if runs:
        _drop_staged(spark, quarantine_table, [run for _, run in runs])


def _tagged_rows(
    spark: SparkSession, table: str, metrics_table: str, run_id: str, version: int, meta: dict[str, Any]
) -> list[tuple[object, ...]]:
    """The metrics rows of a commit, from its tag (measured on its rows for a one-pass write)."""
    from pyspark.sql import functions as F

    tag = meta[QUALITY_TAG]
    at = datetime.fromisoformat(tag["run_at"])
    measure = tag.get("measure")
    if measure is None:
        values = {str(k): (None if v is None else float(v)) for k, v in (tag.get("metrics") or {}).items()}
        checks = [
            CheckResult(str(n), "", str(sev), st, val, str(det))
            for n, val, sev, st, det in tag.get("checks") or []
        ]
        return metric_rows(table, run_id, version, True, at, values, checks)
    if meta.get("mode") == "append":
        written = (
            spark.read.format("delta").option("readChangeFeed", "true")
            .option("startingVersion", version).option("endingVersion", version).table(table)
            .filter(F.col("_change_type") == "insert")
            .drop("_change_type", "_commit_version", "_commit_timestamp")
        )  # fmt: skip
    else:
        written = _tables.at_version(spark, table, version)
    metrics = [MetricConfig.model_validate(m) for m in measure.get("metrics") or []]
    values = compute_metrics(written, [MetricConfig(metric="row_count"), *metrics])
    rows = float(values.pop("row_count") or 0.0)
    if any(m.metric == "row_count" for m in metrics):
        values["row_count"] = rows
    values.update({"rows_read": rows, "rows_cleansed": rows, "rows_quarantined": 0.0})
    results = evaluate(
        [CheckConfig.model_validate(c) for c in measure.get("checks") or []],
        values,
        _past_values(spark, metrics_table, table),
    )
    return metric_rows(table, run_id, version, True, at, values, results)
