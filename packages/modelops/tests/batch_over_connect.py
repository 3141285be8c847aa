"""Score a table with ``churn@prod`` over Spark Connect, in a process of its own; print the result as JSON.

``python batch_over_connect.py REGISTRY_URL`` with ``THIMBLE_SPARK__REMOTE`` and ``THIMBLE_CONFIG`` set. A
process of its own because pyspark switches a whole process to Spark Connect once it opens a Connect
session: the tests' own session may run in process.
"""

from __future__ import annotations

import dataclasses
import json
import sys

from modelops_testmodels import churn_sample

from thimble.common.spark import build_spark_session, uses_connect
from thimble.modelops import Registry
from thimble.modelops.batch import run_batch
from thimble.modelops.config import load_modelops_settings


def main() -> None:
    settings = load_modelops_settings(overrides={"modelops": {"registry": sys.argv[1]}})
    spark = build_spark_session(settings, app_name="thimble-modelops-tests")
    assert uses_connect(spark), "THIMBLE_SPARK__REMOTE must name a Spark Connect server"
    try:
        rows = churn_sample(400, seed=5)
        source = f"{settings.warehouse.database}.client_features"
        spark.createDataFrame(rows).write.format("delta").saveAsTable(source)
        registry = Registry(sys.argv[1])
        first = run_batch(spark, "churn@prod", source, "churn_scores", registry=registry, settings=settings)
        again = run_batch(
            spark, "churn@prod", source, "churn_scores", registry=registry, settings=settings, mode="append"
        )
        written = spark.table(f"{settings.warehouse.database}.churn_scores").count()
        print(
            json.dumps(
                {"first": dataclasses.asdict(first), "again": dataclasses.asdict(again), "rows": written}
            )
        )
    finally:
        spark.stop()


if __name__ == "__main__":
    main()
