"""Reading a small Delta table costs a few tasks, not Delta's default 50 partitions of table state."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from thimble.etl._connect import tracker_caught_up
from thimble.testing import in_process_only

pytestmark = pytest.mark.integration


@in_process_only
def test_a_small_table_just_appended_to_is_read_in_a_few_tasks(spark: SparkSession, tmp_path: Path) -> None:
    path = str(tmp_path / "numbers")
    spark.range(10).write.format("delta").save(path)
    spark.range(5).write.format("delta").mode("append").save(path)
    sc = spark.sparkContext
    tracker = sc.statusTracker()
    sc.setJobGroup("etl-test-small-read", "a small Delta read")
    try:
        assert spark.read.format("delta").load(path).count() == 15
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)  # type: ignore[arg-type]
    tracker_caught_up(spark)
    stages = [
        tracker.getStageInfo(stage)
        for job in tracker.getJobIdsForGroup("etl-test-small-read")
        for stage in (tracker.getJobInfo(job).stageIds if tracker.getJobInfo(job) else [])
    ]
    tasks = [stage.numTasks for stage in stages if stage is not None]
    partitions = int(spark.conf.get("spark.sql.shuffle.partitions") or 0)

    assert tasks, "no Spark job ran"
    assert max(tasks) <= max(partitions, 2), tasks
