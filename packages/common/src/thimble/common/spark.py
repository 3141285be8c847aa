"""Build the SparkSession every Thimble job uses: local jars, Delta Lake, an embedded Hive metastore.

The Kafka connector and Delta jars are resolved by Maven ahead of time into ``<run dir>/jars/spark``
(``./dev setup``); the session puts them on ``spark.jars`` and never downloads anything at start.
"""

from __future__ import annotations

import glob
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from thimble.common._paths import jars_dir
from thimble.common.config import ThimbleSettings
from thimble.common.errors import ThimbleError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
LOG4J2_CONFIG = Path(__file__).with_name("spark-log4j2.properties")


def spark_jars_dir() -> Path:
    """Where ``./dev setup`` puts the Kafka connector and Delta jars (under ``THIMBLE_STACK_JARS_DIR`` if set)."""
    return jars_dir() / "spark"


def local_jars(settings: ThimbleSettings) -> list[str]:
    """The jars for ``spark.jars``: the configured ones, else every jar in :func:`spark_jars_dir`."""
    if settings.spark.jars:
        missing = [jar for jar in settings.spark.jars if not Path(jar).exists()]
        if missing:
            raise ThimbleError(f"spark.jars: these jars do not exist: {', '.join(missing)}")
        return list(settings.spark.jars)
    jars = sorted(glob.glob(str(spark_jars_dir() / "*.jar")))
    if not any("delta-spark" in Path(jar).name for jar in jars):
        raise ThimbleError(
            f"No Delta Lake jars in {spark_jars_dir()}. Run `./dev setup` (it resolves them with Maven), "
            "or list them under spark.jars."
        )
    return jars


def _ensure_java_home() -> None:
    if os.environ.get("JAVA_HOME"):
        return
    for candidate in sorted(glob.glob("/usr/lib/jvm/java-17-openjdk*")):
        if Path(candidate, "bin", "java").exists():
            os.environ["JAVA_HOME"] = candidate
            return


def spark_conf(settings: ThimbleSettings) -> dict[str, str]:
    """Every Spark setting Thimble applies, before the user's ``spark.conf`` (which wins)."""
    metastore = Path(settings.warehouse.metastore).resolve()
    java_options = " ".join(
        [
            f"-Dderby.system.home={metastore}",
            f"-Dderby.stream.error.file={metastore / 'derby.log'}",
            f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
            f"-Dthimble.spark.log={metastore.parent / 'spark.log'}",
        ]
    )
    conf = {
        "spark.jars": ",".join(local_jars(settings)),
        "spark.sql.extensions": DELTA_EXTENSION,
        "spark.sql.catalog.spark_catalog": DELTA_CATALOG,
        "spark.sql.warehouse.dir": str(Path(settings.warehouse.location).resolve()),
        "spark.sql.catalogImplementation": "hive",
        "spark.hadoop.javax.jdo.option.ConnectionURL": f"jdbc:derby:;databaseName={metastore / 'metastore_db'};create=true",
        "spark.driver.extraJavaOptions": java_options,
        # Python workers (UDFs, mapInPandas) must run this interpreter, which has Thimble installed.
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
        "spark.driver.memory": settings.spark.driver_memory,
        "spark.sql.shuffle.partitions": str(settings.spark.shuffle_partitions),
        "spark.default.parallelism": str(settings.spark.shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
    }
    conf.update(settings.spark.conf)
    return conf


def build_spark_session(settings: ThimbleSettings | None = None, app_name: str | None = None) -> SparkSession:
    """Create (or return the running) SparkSession configured from ``settings``."""
    from pyspark.sql import SparkSession

    settings = settings or ThimbleSettings()
    _ensure_java_home()
    # pyspark picks the workers' interpreter from the environment when the context starts.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    Path(settings.warehouse.metastore).mkdir(parents=True, exist_ok=True)
    builder = SparkSession.builder.master(settings.spark.master).appName(app_name or settings.spark.app_name)
    for key, value in spark_conf(settings).items():
        builder = builder.config(key, value)
    session = builder.enableHiveSupport().getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    session.sql(f"CREATE DATABASE IF NOT EXISTS `{settings.warehouse.database}`")
    return session
