"""What differs between a Spark Connect session (a thin client of a long-lived server) and an in-process one.

Everything else in thimble-etl speaks the DataFrame and SQL API that both share. What only an in-process
session has (its JVM, the status tracker, job groups, observed metrics of a write) is asked for here, with
the way that works over Connect beside it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

from thimble.common.spark import uses_connect

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

StageCounts = tuple[int, int]
"""(stages done, stages known)."""

JOB_GROUP_PROPERTIES = ("spark.jobGroup.id", "spark.job.description", "spark.job.interruptOnCancel")
"""The thread-local properties a job group sets on the SparkContext."""

TRACKER_WAIT_MS = 2000
"""At most this long a job count waits for Spark's status tracker to catch up with the jobs."""

REPORT_INTERVAL = "200ms"
"""How often a Connect server reports the stages of a running operation to a followed session."""


def master(spark: SparkSession) -> str:
    """The master URL the session's jobs run on (the server's, over Connect)."""
    if uses_connect(spark):
        return spark.conf.get("spark.master", "") or ""
    return spark.sparkContext.master or ""


def default_parallelism(spark: SparkSession) -> int | None:
    """How many tasks a stage runs at once by default; over Connect, the server's setting (None if unset)."""
    if uses_connect(spark):
        value = spark.conf.get("spark.default.parallelism", None)
        return int(value) if value and value.isdigit() and int(value) > 0 else None
    return int(spark.sparkContext.defaultParallelism)


def observes_writes(spark: SparkSession) -> bool:
    """Whether metrics observed on a DataFrame are reported by a write of it (not over Connect)."""
    return not uses_connect(spark)


@contextmanager
def job_group(spark: SparkSession, group: str, description: str) -> Iterator[None]:
    """Label the Spark jobs started inside the block with ``group`` (a job group, or a tag over Connect)."""
    if uses_connect(spark):
        spark.addTag(_tag(group))
        try:
            yield
        finally:
            spark.removeTag(_tag(group))
        return
    context = spark.sparkContext
    outer = {key: context.getLocalProperty(key) for key in JOB_GROUP_PROPERTIES}
    context.setJobGroup(group, description, interruptOnCancel=True)
    try:
        yield
    finally:  # the caller's later jobs are theirs, not the block's
        for key, value in outer.items():
            context.setLocalProperty(key, value)  # type: ignore[arg-type]  # None removes it


def _tag(group: str) -> str:
    # A tag may not contain a comma.
    return group.replace(",", "_")


def jobs_in_group(spark: SparkSession, group: str) -> int | None:
    """How many Spark jobs ran under ``group`` (None over Connect, which does not tell)."""
    if uses_connect(spark):
        return None
    tracker_caught_up(spark)
    return len(spark.sparkContext.statusTracker().getJobIdsForGroup(group))


def tracker_caught_up(spark: SparkSession, timeout_ms: int = TRACKER_WAIT_MS) -> None:
    """Wait until the status tracker of an in-process session has seen every job started so far.

    The tracker learns of jobs from Spark's listener bus, which runs behind the jobs themselves: on a
    busy machine a job that just returned may not be listed yet. A tracker still behind after
    ``timeout_ms`` is read as it is (its counts are a report, never a decision)."""
    from py4j.protocol import Py4JError

    with suppress(Py4JError):  # a TimeoutException from the JVM
        spark.sparkContext._jsc.sc().listenerBus().waitUntilEmpty(timeout_ms)


class StageProgress:
    """Stages done and known of the jobs of a job group: polled from the status tracker in process,
    reported by the server with each operation's progress over Connect.

    Over Connect the count covers the operations since :meth:`follow` named the group: a run uses its
    session from one thread, so these are the group's.
    """

    def __init__(self, spark: SparkSession) -> None:
        self._spark = spark
        self._remote = uses_connect(spark)
        self._lock = threading.Lock()
        self._group: str | None = None
        self._operations: dict[str, StageCounts] = {}
        self._handler: Callable[..., None] | None = None

    def start(self) -> None:
        if self._remote:
            # the server reports every 2 s by default: a phase shorter than that would show no stages
            self._spark.conf.set("spark.connect.progress.reportInterval", REPORT_INTERVAL)
            self._handler = self._on_progress
            self._spark.registerProgressHandler(self._handler)

    def stop(self) -> None:
        if self._handler is not None:
            self._spark.removeProgressHandler(self._handler)
            self._handler = None

    def follow(self, group: str) -> None:
        """Count the stages of ``group`` from now on."""
        with self._lock:
            self._group = group
            self._operations = {}

    def counts(self) -> StageCounts:
        """(done, known) stages of the followed group so far."""
        with self._lock:
            group = self._group
            if self._remote or group is None:
                operations = list(self._operations.values())
                return sum(d for d, _ in operations), sum(t for _, t in operations)
        return _tracked_counts(self._spark, group)

    def _on_progress(
        self,
        stages: Iterable[Any] | None,
        inflight_tasks: int,
        operation_id: str | None = None,
        done: bool = False,
    ) -> None:
        key = operation_id or ""
        with self._lock:
            if self._group is None:
                return
            if stages is None:  # no stage news; a finished operation has finished every stage
                _, known = self._operations.get(key, (0, 0))
                if done:
                    self._operations[key] = (known, known)
                return
            listed = list(stages)
            self._operations[key] = (sum(1 for s in listed if s.done or done), len(listed))


def _tracked_counts(spark: SparkSession, group: str) -> StageCounts:
    tracker = spark.sparkContext.statusTracker()
    done = total = 0
    for job_id in tracker.getJobIdsForGroup(group):
        job = tracker.getJobInfo(job_id)
        if job is None:
            continue
        for stage_id in job.stageIds:
            total += 1
            stage = tracker.getStageInfo(stage_id)
            if (
                stage is None
                or (stage.numTasks and stage.numCompletedTasks >= stage.numTasks)
                or job.status == "SUCCEEDED"
            ):
                done += 1
    return done, total
