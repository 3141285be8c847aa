"""Run one of thimble-etl's Spark paths over Spark Connect, in a process of its own; print the outcome as JSON.

``python over_connect.py CHECK ARGUMENT`` with ``THIMBLE_SPARK__REMOTE`` and ``THIMBLE_CONFIG`` set. A
process of its own because pyspark switches a whole process to Spark Connect once it opens a Connect
session: the tests' own session may run in process.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

from pyspark.sql import SparkSession

from thimble.common.config import ThimbleSettings
from thimble.testing import wait_until


def listing(spark: SparkSession, settings: ThimbleSettings, root: str) -> Any:
    """The landed files under ``root``, as a landing source lists them."""
    from thimble.etl.sources import _landing_files

    return _landing_files(spark, root)


def progress(spark: SparkSession, settings: ThimbleSettings, group: str) -> Any:
    """Stages done/known of a job group that runs one action of four stages; jobs counted in it."""
    from pyspark.sql import functions as F

    from thimble.etl._connect import StageProgress, job_group, jobs_in_group

    @F.udf("long")
    def slowly(value: int) -> int:
        # every stage outlasts several of the server's progress reports: the last report before the
        # result is the one the phase ends on, and it must already list the last stage
        time.sleep(0.5)
        return value

    stages = StageProgress(spark)
    stages.start()
    try:
        stages.follow(group)
        with job_group(spark, group, "a test job"):
            rows = spark.range(0, 4, 1, 4).select(slowly("id").alias("id"))
            counted = rows.repartition(3).select(slowly("id").alias("id")).groupBy("id").count()
            counted.repartition(2).select(slowly("id")).collect()
        done, known = wait_until(
            lambda: (counts := stages.counts())[0] == counts[1] > 0 and counts,
            what="the stages of the job reported done",
        )
    finally:
        stages.stop()
    return {
        "done": done,
        "known": known,
        "jobs": jobs_in_group(spark, group),
        "tags": sorted(spark.getTags()),
    }


def one_pass(spark: SparkSession, settings: ThimbleSettings, table: str) -> Any:
    """An append that a session in process writes in one pass, with its metrics observed by the write."""
    from thimble.etl import history, write_dataframe

    rows = spark.createDataFrame([(i, float(i)) for i in range(5)], "id bigint, amount double")
    created = write_dataframe(rows, table, settings=settings)
    quality = {"metrics": [{"metric": "row_count"}, {"metric": "mean", "column": "amount"}]}
    appended = write_dataframe(rows, table, settings=settings, quality=quality)
    versions = {v.version: v.inserted for v in history(table, spark=spark, settings=settings)}
    return {
        "created": [created.status, created.version],
        "appended": [appended.status, appended.version, appended.inserted],
        "metrics": appended.metrics,
        "inserted_by_version": versions,
    }


CHECKS: dict[str, Callable[[SparkSession, ThimbleSettings, str], Any]] = {
    "listing": listing,
    "progress": progress,
    "one_pass": one_pass,
}


def main() -> None:
    from thimble.common.config import load_settings
    from thimble.common.spark import build_spark_session, uses_connect

    check, argument = sys.argv[1], sys.argv[2]
    settings = load_settings()
    spark = build_spark_session(settings, app_name="thimble-etl-tests")
    assert uses_connect(spark), "THIMBLE_SPARK__REMOTE must name a Spark Connect server"
    try:
        print(json.dumps(CHECKS[check](spark, settings, argument), default=str))
    finally:
        spark.stop()


if __name__ == "__main__":
    main()
