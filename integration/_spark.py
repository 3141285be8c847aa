"""Spark as services: a Spark Connect server and, on demand, a standalone master and workers.

Everything runs from the installed pyspark's own launchers (``bin/spark-submit``, ``bin/spark-class``)
with the Maven-resolved Delta Lake and Kafka connector jars. The Connect server owns the stack's
warehouse folder and its Derby metastore, so several client processes use the warehouse at once. It runs
its work in its own JVM (``local[2]``), or on ``spark_workers`` standalone workers when there are any.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import urllib.request
from pathlib import Path
from typing import Any

from integration._jars import present, pyspark_jars_dir
from integration._procs import PidFile, alive, port_open, reap, start_detached, start_time, tail, wait_for
from integration._service import Service
from integration._settings import REPO_ROOT, StackSettings, find_java
from integration.errors import JarsError

CONNECT_SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
APP_NAME = "thimble-connect"
# Sized for a 2-core machine shared with Kafka and Redis: the server's JVM runs the work itself in
# local mode; with workers it only plans, and each worker runs one 1-core executor.
LOCAL_DRIVER_MEMORY = "2g"
CLUSTER_DRIVER_MEMORY = "1g"
WORKER_MEMORY = "1g"
EXECUTOR_MEMORY = "768m"
DAEMON_MEMORY = "256m"
SHUFFLE_PARTITIONS = 4
HEALTH_TIMEOUT_S = 3.0
WARM_UP_TIMEOUT_S = 600.0
UTC_JVM = "-Duser.timezone=UTC"

LOG4J2 = """\
# Written by integration/stack.py: Spark logs to stdout, which the stack appends to logs/<service>.log.
rootLogger.level = warn
rootLogger.appenderRef.stdout.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_OUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{ISO8601} %p %c{1}: %m%n%ex
logger.connect.name = org.apache.spark.sql.connect.service.SparkConnectServer
logger.connect.level = info
logger.connectgrpc.name = org.apache.spark.sql.connect.service.SparkConnectService
logger.connectgrpc.level = info
logger.deploy.name = org.apache.spark.deploy
logger.deploy.level = info
# Known-harmless noise: Delta tables are not Hive SerDe tables; Derby metastore bootstrap.
logger.hive.name = org.apache.spark.sql.hive.HiveExternalCatalog
logger.hive.level = error
logger.objectstore.name = org.apache.hadoop.hive.metastore.ObjectStore
logger.objectstore.level = error
logger.native.name = org.apache.hadoop.util.NativeCodeLoader
logger.native.level = error
"""


def spark_home() -> Path:
    """The installed pyspark's folder, which holds Spark's jars and launchers."""
    return pyspark_jars_dir().parent


def spark_services(settings: StackSettings) -> list[Service]:
    """Spark's services in start order: the master and its workers (if any), then the Connect server."""
    if not settings.spark:
        return []
    cluster: list[Service] = []
    if settings.spark_workers:
        cluster = [
            SparkMaster(settings),
            *(SparkWorker(settings, i) for i in range(1, settings.spark_workers + 1)),
        ]
    return [*cluster, SparkConnect(settings)]


def _properties(values: dict[str, str]) -> str:
    lines = ["# Written by integration/stack.py on every start; edit the code, not this file."]
    lines += [f"{key} {value}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


class _SparkService(Service):
    """A Spark JVM run from pyspark's folder, its settings in a properties file under ``conf/spark``."""

    stop_timeout = 20.0

    @property
    def properties_path(self) -> Path:
        return self.settings.conf_dir / "spark" / f"{self.name}.conf"

    @property
    def log4j_path(self) -> Path:
        return self.settings.conf_dir / "spark" / "log4j2.properties"

    @property
    def marker(self) -> str:
        return str(self.properties_path)

    def properties(self) -> dict[str, str]:
        """The Spark settings this JVM starts with."""
        return {}

    def prepare(self) -> None:
        self.properties_path.parent.mkdir(parents=True, exist_ok=True)
        self.log4j_path.write_text(LOG4J2)
        self.properties_path.write_text(_properties(self.properties()))

    def environment(self) -> dict[str, str]:
        java_home = Path(find_java()).resolve().parent.parent
        daemon_options = f"-Dlog4j2.configurationFile={self.log4j_path} {UTC_JVM}"
        return {
            **os.environ,
            "JAVA_HOME": str(java_home),
            "SPARK_HOME": str(spark_home()),
            "SPARK_CONF_DIR": str(self.log4j_path.parent),
            "SPARK_DAEMON_MEMORY": DAEMON_MEMORY,
            "SPARK_DAEMON_JAVA_OPTS": daemon_options,
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_LOCAL_DIRS": str(self.settings.data_dir / "spark" / "tmp"),
            # Python workers (mapInPandas, UDFs) need pyarrow and Thimble: this environment's interpreter.
            "PYSPARK_PYTHON": sys.executable,
        }


def master_state(settings: StackSettings) -> dict[str, Any] | None:
    """The standalone master's own account of itself (its web UI's JSON), or None when it does not answer."""
    url = f"http://127.0.0.1:{settings.spark_master_ui_port}/json/"
    try:
        with urllib.request.urlopen(url, timeout=HEALTH_TIMEOUT_S) as response:
            state: dict[str, Any] = json.loads(response.read())
    except (OSError, ValueError):
        return None
    return state


class SparkMaster(_SparkService):
    """A Spark standalone master on loopback; its web UI's JSON tells the workers and apps it has."""

    name = "spark-master"
    ready_timeout = 60.0

    @property
    def ports(self) -> list[int]:
        return [self.settings.spark_master_port, self.settings.spark_master_ui_port]

    @property
    def address(self) -> str:
        return self.settings.spark_master_url

    def argv(self) -> list[str]:
        return [
            str(spark_home() / "bin" / "spark-class"),
            MASTER_CLASS,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.settings.spark_master_port),
            "--webui-port",
            str(self.settings.spark_master_ui_port),
            "--properties-file",
            str(self.properties_path),
        ]

    def properties(self) -> dict[str, str]:
        return {"spark.master.rest.enabled": "false"}

    def healthy(self) -> bool:
        state = master_state(self.settings)
        return state is not None and state.get("status") == "ALIVE"


class SparkWorker(_SparkService):
    """Standalone worker ``number`` (1-based): one core, a small memory, registered with the master."""

    ready_timeout = 60.0

    def __init__(self, settings: StackSettings, number: int) -> None:
        super().__init__(settings)
        self.number = number
        self.name = f"spark-worker-{number}"
        self.work_dir = settings.data_dir / "spark" / self.name

    @property
    def port(self) -> int:
        return self.settings.spark_worker_port(self.number)

    @property
    def ports(self) -> list[int]:
        return [self.port]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        return [
            str(spark_home() / "bin" / "spark-class"),
            WORKER_CLASS,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--webui-port",
            "0",
            "--cores",
            "1",
            "--memory",
            WORKER_MEMORY,
            "--work-dir",
            str(self.work_dir),
            "--properties-file",
            str(self.properties_path),
            self.settings.spark_master_url,
        ]

    def prepare(self) -> None:
        super().prepare()
        self.work_dir.mkdir(parents=True, exist_ok=True)

    def properties(self) -> dict[str, str]:
        # Finished applications' folders are removed, so a long-lived stack does not fill the disk.
        return {"spark.worker.cleanup.enabled": "true", "spark.worker.cleanup.appDataTtl": "3600"}

    def healthy(self) -> bool:
        state = master_state(self.settings)
        workers = state.get("workers", []) if state else []
        return any(w.get("port") == self.port and w.get("state") == "ALIVE" for w in workers)


class SparkConnect(_SparkService):
    """The Spark Connect server: Delta Lake, the stack's warehouse and metastore, loopback only."""

    name = "spark"
    ready_timeout = 180.0
    stop_timeout = 30.0

    @property
    def ports(self) -> list[int]:
        return [self.settings.spark_port]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.settings.spark_port}"

    @property
    def url(self) -> str:
        """What clients set as ``spark.remote`` (``THIMBLE_SPARK__REMOTE``)."""
        return f"sc://{self.address}"

    @property
    def warehouse_dir(self) -> Path:
        return self.settings.run_dir / "warehouse"

    @property
    def metastore_dir(self) -> Path:
        return self.settings.run_dir / "metastore"

    def jars(self) -> list[Path]:
        jars = present(self.settings, "spark")
        if not any("delta-spark" in jar.name for jar in jars):
            raise JarsError(f"no Delta Lake jars in {self.settings.jars_dir / 'spark'}: run `./dev setup`")
        return jars

    def properties(self) -> dict[str, str]:
        from thimble.common.spark import CODEGEN_CACHE, DELTA_CATALOG, DELTA_EXTENSION

        metastore = self.metastore_dir
        workers = self.settings.spark_workers
        driver_options = " ".join(
            [
                f"-Dderby.system.home={metastore}",
                f"-Dderby.stream.error.file={metastore / 'derby.log'}",
                f"-Dlog4j2.configurationFile={self.log4j_path}",
                UTC_JVM,
            ]
        )
        values = {
            "spark.master": self.settings.spark_master_url if workers else "local[2]",
            "spark.app.name": APP_NAME,
            "spark.jars": ",".join(str(jar) for jar in self.jars()),
            "spark.sql.extensions": DELTA_EXTENSION,
            "spark.sql.catalog.spark_catalog": DELTA_CATALOG,
            "spark.sql.warehouse.dir": str(self.warehouse_dir),
            "spark.sql.catalogImplementation": "hive",
            "spark.hadoop.javax.jdo.option.ConnectionURL": (
                f"jdbc:derby:;databaseName={metastore / 'metastore_db'};create=true"
            ),
            "spark.connect.grpc.binding.address": "127.0.0.1",
            "spark.connect.grpc.binding.port": str(self.settings.spark_port),
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            "spark.driver.memory": self.driver_memory,
            "spark.driver.extraJavaOptions": driver_options,
            "spark.executor.extraJavaOptions": UTC_JVM,
            "spark.pyspark.python": sys.executable,
            "spark.pyspark.driver.python": sys.executable,
            "spark.local.dir": str(self.settings.data_dir / "spark" / "tmp"),
            "spark.sql.shuffle.partitions": str(SHUFFLE_PARTITIONS),
            "spark.default.parallelism": str(SHUFFLE_PARTITIONS),
            "spark.databricks.delta.snapshotPartitions": str(SHUFFLE_PARTITIONS),
            "spark.sql.session.timeZone": "UTC",
            "spark.sql.execution.arrow.pyspark.enabled": "true",
            "spark.databricks.delta.schema.autoMerge.enabled": "false",
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
            **CODEGEN_CACHE,
        }
        if workers:
            values |= {
                "spark.executor.memory": EXECUTOR_MEMORY,
                "spark.executor.cores": "1",
                "spark.cores.max": str(workers),
            }
        return values

    @property
    def driver_memory(self) -> str:
        return CLUSTER_DRIVER_MEMORY if self.settings.spark_workers else LOCAL_DRIVER_MEMORY

    def environment(self) -> dict[str, str]:
        # spark-submit sizes a Connect server (like a Thrift server) by SPARK_DAEMON_MEMORY.
        return {**super().environment(), "SPARK_DAEMON_MEMORY": self.driver_memory}

    def prepare(self) -> None:
        super().prepare()
        for folder in (self.warehouse_dir, self.metastore_dir, self.settings.data_dir / "spark" / "tmp"):
            folder.mkdir(parents=True, exist_ok=True)

    def argv(self) -> list[str]:
        return [
            str(spark_home() / "bin" / "spark-submit"),
            "--properties-file",
            str(self.properties_path),
            "--class",
            CONNECT_SERVER_CLASS,
            "--name",
            APP_NAME,
        ]

    @property
    def warm_up_pid_file(self) -> PidFile:
        return PidFile(self.settings.pids_dir / "spark-warmup.pid")

    @property
    def warm_up_log(self) -> Path:
        return self.settings.logs_dir / "spark-warmup.log"

    def after_start(self) -> str | None:
        """Warm the new server up in the background (see :mod:`integration._spark_warmup`)."""
        if not self.settings.spark_warmup:
            return None
        environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        argv = [
            sys.executable,
            "-m",
            "integration._spark_warmup",
            self.url,
            str(self.settings.data_dir / "warmup"),
        ]
        pid = start_detached(argv, self.warm_up_log, cwd=REPO_ROOT, env=environment)
        self.warm_up_pid_file.write(pid)
        return (
            f"warming up in the background (pid {pid}, log {self.warm_up_log}; "
            "THIMBLE_STACK_SPARK_WARMUP=0 turns it off)"
        )

    def settle(self) -> str | None:
        """Wait for a warm-up that still runs; its last line (done, or why it stopped), or None."""
        entry = self.warm_up_pid_file.read()
        if entry is None:
            return None
        pid, started = entry
        if not alive(pid) or (started is not None and start_time(pid) != started):
            return None
        if not wait_for(lambda: not alive(pid), WARM_UP_TIMEOUT_S, interval=0.5):
            return (
                f"the warm-up (pid {pid}) still runs after {WARM_UP_TIMEOUT_S:.0f}s; see {self.warm_up_log}"
            )
        reap(pid)
        last = tail(self.warm_up_log, 1).strip()
        return last or f"warm-up ended; see {self.warm_up_log}"

    def healthy(self) -> bool:
        """A ``SELECT 1`` answered through a Connect client; with workers, the master also gave it cores."""
        if not port_open(self.settings.spark_port):
            return False
        if not _answers_select_one(self.url):
            return False
        if not self.settings.spark_workers:
            return True
        state = master_state(self.settings)
        apps = state.get("activeapps", []) if state else []
        return any(app.get("name") == APP_NAME and app.get("cores", 0) > 0 for app in apps)


def _answers_select_one(url: str) -> bool:
    from pyspark.sql.connect.session import SparkSession

    try:
        session = SparkSession.builder.remote(url).create()
    except Exception:
        return False
    try:
        session.client.set_retry_policies([])
        session.client.disable_reattachable_execute()
        return bool(session.sql("SELECT 1 AS one").collect()[0]["one"] == 1)
    except Exception:
        return False
    finally:
        # The server may have gone away between the query and the release.
        with contextlib.suppress(Exception):
            session.stop()
