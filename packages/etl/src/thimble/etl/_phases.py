"""The phases of a run as Spark job groups: what a progress display follows, and time and jobs per phase.

Job groups and job counts are asked of :mod:`thimble.etl._connect` (tags over Spark Connect).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

from thimble.etl._connect import job_group, jobs_in_group

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


class Progress(Protocol):
    """Told when each phase of a run starts; ``group`` is the Spark job group of its jobs."""

    def phase(self, name: str, group: str) -> None: ...


class Phases:
    """``with phases("validate"): ...`` runs the block's Spark jobs in the group ``<run_id>:validate``."""

    def __init__(self, spark: SparkSession, run_id: str, progress: Progress | None = None) -> None:
        self.spark = spark
        self.run_id = run_id
        self.progress = progress
        self.groups: dict[str, str] = {}
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        group = f"{self.run_id}:{name}"
        self.groups[name] = group
        if self.progress is not None:
            self.progress.phase(name, group)
        start = time.monotonic()
        try:
            with job_group(self.spark, group, f"thimble-etl {name}"):
                yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.monotonic() - start

    def job_counts(self) -> dict[str, int]:
        """Spark jobs run in each phase so far (none over Spark Connect, which does not count them)."""
        counts = {name: jobs_in_group(self.spark, group) for name, group in self.groups.items()}
        return {name: count for name, count in counts.items() if count is not None}

    def rounded_seconds(self) -> dict[str, float]:
        return {name: round(seconds, 2) for name, seconds in self.seconds.items()}
