"""Live progress of a run in the terminal: the phase, and Spark stages done/total of its job group.

In process the stages come from Spark's status tracker; over Spark Connect, from the progress the server
reports with each operation.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from thimble.etl._connect import StageProgress

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


class SparkProgress:
    """Shows ``phase: stages done/total`` while a run goes, refreshed from a thread."""

    def __init__(self, spark: SparkSession, console: Console | None = None) -> None:
        self._stages = StageProgress(spark)
        self._bar = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("stages"),
            TimeElapsedColumn(),
            console=console or Console(stderr=True),
            transient=False,
        )
        self._task = self._bar.add_task("starting", total=None)
        self._group: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="thimble-etl-progress", daemon=True)

    def phase(self, name: str, group: str) -> None:
        self._group = group
        self._stages.follow(group)
        self._bar.update(self._task, description=name, completed=0, total=None)

    def _poll(self) -> None:
        while not self._stop.wait(0.25):
            if self._group is None:
                continue
            done, total = self._stages.counts()
            self._bar.update(self._task, completed=done, total=total or None)

    def __enter__(self) -> SparkProgress:
        self._stages.start()
        self._bar.start()
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._stages.stop()
        self._bar.stop()
