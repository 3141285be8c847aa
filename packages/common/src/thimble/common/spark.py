"""Build the SparkSession every Thimble job uses: over Spark Connect, or Spark in this process.

With ``spark.remote`` (``sc://host:port``, e.g. the local stack's server) the session is a thin Spark
Connect client: the server owns the jars, the Delta extension, the metastore and the memory. Without it
the session runs in this process (``spark.master``, default ``local[2]``) with local jars, Delta Lake
and an embedded Hive metastore. The Kafka connector and Delta jars are resolved by Maven ahead of time
into ``<run dir>/jars/spark`` (``./dev setup``); neither way downloads anything at start.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import glob
import os
import socket
import sys
import time
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from thimble.common._paths import jars_dir
from thimble.common.config import ThimbleSettings, connect_address
from thimble.common.errors import ConfigError, ServiceUnavailableError, ThimbleError, spark_failure
from thimble.common.logging import get_logger

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = get_logger(__name__)

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
LOG4J2_CONFIG = Path(__file__).with_name("spark-log4j2.properties")
JARS_ENV_VAR = "THIMBLE_SPARK__JARS"
REMOTE_ENV_VAR = "THIMBLE_SPARK__REMOTE"
CONNECT_TIMEOUT_S = 3.0
FIRST_REQUEST_RETRIES = 4
UTC_JVM = "-Duser.timezone=UTC"
# PySpark logs every failing query's context (a JSON line of several KB) on stderr before raising it.
_PYSPARK_ERROR_LOGGERS = ("SQLQueryContextLogger", "DataFrameQueryContextLogger")


def spark_jars_dir() -> Path:
    """Where ``./dev setup`` puts the Kafka connector and Delta jars (under ``THIMBLE_STACK_JARS_DIR`` if set)."""
    return jars_dir() / "spark"


def local_jars(settings: ThimbleSettings) -> list[str]:
    """The jars for ``spark.jars``: the configured ones, else every jar in :func:`spark_jars_dir`."""
    if settings.spark.jars:
        missing = [jar for jar in settings.spark.jars if not Path(jar).is_file()]
        if missing:
            where = JARS_ENV_VAR if os.environ.get(JARS_ENV_VAR) else "spark.jars (settings file)"
            raise ConfigError([f"{where}: no such jar file: {', '.join(missing)}"])
        return list(settings.spark.jars)
    jars = sorted(glob.glob(str(spark_jars_dir() / "*.jar")))
    if not any("delta-spark" in Path(jar).name for jar in jars):
        raise ThimbleError(
            f"No Delta Lake jars in {spark_jars_dir()}. Run `./dev setup` (it resolves them with Maven), "
            "or list them under spark.jars."
        )
    return jars


def as_utc(value: datetime) -> datetime:
    """A timestamp collected from Spark as an aware UTC datetime.

    PySpark returns naive datetimes in this process's local zone, whatever the session's zone.
    """
    return value.astimezone(UTC)


def spark_log(settings: ThimbleSettings) -> Path:
    """The file Spark's JVM logs to (warnings and errors), beside the metastore."""
    return Path(settings.warehouse.metastore).resolve().parent / "spark.log"


def _silence_pyspark_error_logs() -> None:
    from pyspark.logger import PySparkLogger

    for name in _PYSPARK_ERROR_LOGGERS:
        PySparkLogger.getLogger(name).disabled = True


def _start_jvm(conf: dict[str, str], output: Path) -> None:
    """Launch Spark's JVM with its console output in ``output``, unless this process already has one.

    What the JVM prints (start-up warnings, task failures) is kept out of the user's terminal: a
    failure reaches them as one Python exception, and its details are in the log files.
    """
    from pyspark import SparkConf, SparkContext
    from pyspark.errors import PySparkException
    from pyspark.java_gateway import launch_gateway

    if SparkContext._gateway is not None or "PYSPARK_GATEWAY_PORT" in os.environ:
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    spark_conf = SparkConf(loadDefaults=False).setAll(list(conf.items()))
    with output.open("ab") as sink:
        start = sink.tell()
        try:
            gateway = launch_gateway(spark_conf, popen_kwargs={"stdout": sink, "stderr": sink})  # type: ignore[no-untyped-call]
        except PySparkException:
            raise ServiceUnavailableError(
                f"Spark's JVM did not start: {_first_error(output, start)} (its output: {output})"
            ) from None
    SparkContext._ensure_initialized(gateway=gateway)
    atexit.register(_stop_jvm, gateway)


JVM_EXIT_BOUND_S = 15.0
METASTORE_RELEASE_WAIT_S = 3.0


def _stop_jvm(gateway: Any) -> None:
    """At exit, stop Spark and wait (bounded) for the JVM this process started: it holds the Derby metastore
    until it is gone, and the next command (``run`` then ``history``) must find it free."""
    from pyspark import SparkContext

    with contextlib.suppress(Exception):
        if SparkContext._active_spark_context is not None:
            SparkContext._active_spark_context.stop()
    with contextlib.suppress(Exception):
        gateway.shutdown()
    proc = getattr(gateway, "proc", None)
    if proc is None:
        return
    with contextlib.suppress(Exception):
        if proc.stdin is not None:
            proc.stdin.close()  # the JVM exits when its standard input closes
        proc.wait(timeout=JVM_EXIT_BOUND_S)


def _first_error(path: Path, start: int) -> str:
    with path.open("rb") as file:
        file.seek(start)
        text = file.read().decode(errors="replace")
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("WARNING:", "at ")):
            return line
    return "it printed nothing"


def _ensure_java_home() -> None:
    if os.environ.get("JAVA_HOME"):
        return
    for candidate in sorted(glob.glob("/usr/lib/jvm/java-17-openjdk*")):
        if Path(candidate, "bin", "java").exists():
            os.environ["JAVA_HOME"] = candidate
            return


# Spark keeps the classes it compiles for a plan's generated code in a cache of 100 by default. One
# journal run needs more than that, so a session running loads again compiled most of them again each
# time (about a second per run): a cache this size holds many runs' worth.
CODEGEN_CACHE = {"spark.sql.codegen.cache.maxEntries": "1000"}


def session_conf(settings: ThimbleSettings) -> dict[str, str]:
    """The settings a Spark session may change at run time, which Thimble sets on every session."""
    return {
        "spark.sql.shuffle.partitions": str(settings.spark.shuffle_partitions),
        # Delta's table state (its file list) is split this many ways; its default of 50 makes every read
        # of a small table schedule 50 tasks or more.
        "spark.databricks.delta.snapshotPartitions": str(settings.spark.shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
    }


def spark_conf(settings: ThimbleSettings) -> dict[str, str]:
    """Every Spark setting Thimble applies, before the user's ``spark.conf`` (which wins).

    The local stack's Spark Connect server starts with these too, so that a job sees the same Spark
    whether it runs in its own process or over Connect.
    """
    metastore = Path(settings.warehouse.metastore).resolve()
    java_options = " ".join(
        [
            f"-Dderby.system.home={metastore}",
            f"-Dderby.stream.error.file={metastore / 'derby.log'}",
            f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
            f"-Dthimble.spark.log={spark_log(settings)}",
            UTC_JVM,
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
        "spark.executor.extraJavaOptions": UTC_JVM,
        # Python workers (UDFs, mapInPandas) must run this interpreter, which has Thimble installed.
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
        "spark.driver.memory": settings.spark.driver_memory,
        "spark.default.parallelism": str(settings.spark.shuffle_partitions),
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        **CODEGEN_CACHE,
        **session_conf(settings),
    }
    conf.update(settings.spark.conf)
    return conf


def build_spark_session(settings: ThimbleSettings | None = None, app_name: str | None = None) -> SparkSession:
    """Create (or return the running) SparkSession configured from ``settings``.

    A Spark Connect session when ``spark.remote`` is set, else Spark in this process. Either way the
    warehouse's database exists, in ``warehouse.location``, when it returns.
    """
    settings = settings or ThimbleSettings()
    _silence_pyspark_error_logs()
    if settings.spark.remote:
        if settings.spark.jars:
            log.warning(
                "spark.jars has no effect over Spark Connect: the server at %s loads its own jars",
                settings.spark.remote,
            )
        session = _connect_session(settings, settings.spark.remote)
        with _few_retries(session):
            _ensure_database(session, settings)
        for key, value in {**session_conf(settings), **settings.spark.conf}.items():
            _set_if_modifiable(session, key, value)
    else:
        session = _local_session(settings, app_name)
        _ensure_database(session, settings)
    return session


def uses_connect(session: SparkSession) -> bool:
    """Whether ``session`` is a Spark Connect client (it has no JVM or SparkContext in this process)."""
    return type(session).__module__.startswith("pyspark.sql.connect")


@contextlib.contextmanager
def side_session(session: SparkSession) -> Iterator[SparkSession]:
    """A session of its own on ``session``'s Spark, for a job that runs beside ``session``'s jobs.

    It starts with ``session``'s settings and has its own from then on, so that two jobs in two threads
    never see each other's settings (a commit's metadata, for one). Over Spark Connect it is a session
    of its own on the server, released when the block ends.
    """
    if not uses_connect(session):
        yield session.newSession()
        return
    side = cast(Any, session).cloneSession()
    try:
        yield side
    finally:
        with contextlib.suppress(Exception):
            side.client.release_session()
        with contextlib.suppress(Exception):
            side.client.close()


def _check_metastore_free(metastore: Path) -> None:
    """Fail in one line when another process (the stack's Spark Connect server) has the Derby metastore open.

    Derby would otherwise fail deep inside the first catalog call, with a long Java trace.
    """
    lock = metastore / "metastore_db" / "dbex.lck"
    try:
        handle = lock.open("rb+")
    except OSError:
        return
    with handle:
        # A Spark process that has just ended may hold it a moment longer, while its JVM exits.
        deadline = time.monotonic() + METASTORE_RELEASE_WAIT_S
        while not _try_lock(handle):
            if time.monotonic() >= deadline:
                raise ServiceUnavailableError(
                    f"The Spark metastore in {metastore} is open in another Spark process (the local stack's "
                    f"Spark Connect server?): set {REMOTE_ENV_VAR}=sc://127.0.0.1:15002 to go through that "
                    "server, or give this process a metastore of its own (warehouse.metastore)."
                )
            time.sleep(0.1)
        fcntl.lockf(handle, fcntl.LOCK_UN)


def _try_lock(handle: Any) -> bool:
    try:
        fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _local_session(settings: ThimbleSettings, app_name: str | None) -> SparkSession:
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    _ensure_java_home()
    # pyspark marks a process that opened a Spark Connect session, and a child process inherits the mark,
    # which would send this session to Connect too (and fail: no address).
    os.environ.pop("SPARK_CONNECT_MODE_ENABLED", None)
    # pyspark picks the workers' interpreter from the environment when the context starts.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    Path(settings.warehouse.metastore).mkdir(parents=True, exist_ok=True)
    if SparkContext._active_spark_context is None:
        _check_metastore_free(Path(settings.warehouse.metastore).resolve())
    conf = {
        "spark.master": settings.spark.master,
        "spark.app.name": app_name or settings.spark.app_name,
        **spark_conf(settings),
    }
    _start_jvm(conf, spark_log(settings).with_name("spark-jvm-output.log"))
    builder = SparkSession.builder
    for key, value in conf.items():
        builder = builder.config(key, value)
    session = builder.enableHiveSupport().getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session


def _remote_origin() -> str:
    return REMOTE_ENV_VAR if os.environ.get(REMOTE_ENV_VAR) else "spark.remote (settings file)"


def _connect_session(settings: ThimbleSettings, url: str) -> SparkSession:
    """A Spark Connect session to ``url``, after checking that something listens there.

    The client would otherwise retry a refused connection for minutes before failing with a gRPC trace.
    """
    address = connect_address(url)
    if address is None:
        raise ConfigError(
            [f"{_remote_origin()}: a Spark Connect address looks like sc://host:15002, not {url!r}"]
        )
    host, port = address
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ServiceUnavailableError(
            f"No Spark Connect server answers at {host}:{port} ({_remote_origin()} = {url}): "
            f"{exc.strerror or exc}. Start the local stack's with `./dev stack up`, or unset "
            f"{REMOTE_ENV_VAR} to run Spark in this process."
        ) from None
    from pyspark.sql import SparkSession

    # Settings go after the first request has shown the server answers (see _few_retries).
    return SparkSession.builder.remote(url).getOrCreate()


@contextlib.contextmanager
def _few_retries(session: SparkSession) -> Iterator[None]:
    """Give up on a server that does not answer after a few seconds, not after the client's ten minutes.

    The client retries an unavailable server for that long, which is right for a job that is running
    and wrong for the first request, where it means the address is not a Spark Connect server.
    """
    from pyspark.sql.connect.client.retries import DefaultPolicy

    client = cast(Any, session).client
    patient = client.get_retry_policies()
    client.set_retry_policies([DefaultPolicy(max_retries=FIRST_REQUEST_RETRIES, max_backoff=1000)])
    with warnings.catch_warnings():
        # The failure itself is reported; pyspark's warning that retries ran out would repeat it.
        warnings.filterwarnings("ignore", message=r"\[RETRIES_EXCEEDED\]")
        try:
            yield
        except BaseException:
            # Released now, with the short retries: at exit it would wait as long as the client does.
            with contextlib.suppress(Exception):
                session.stop()
            raise
    client.set_retry_policies(patient)


def _set_if_modifiable(session: SparkSession, key: str, value: str) -> None:
    """Set a session setting; a server's static settings (jars, memory) are the server's to choose."""
    from pyspark.errors import PySparkException

    try:
        session.conf.set(key, value)
    except PySparkException as exc:
        if "CANNOT_MODIFY" not in str(exc) and "StaticSQLConf" not in str(exc):
            raise


def sql_string(value: str) -> str:
    """``value`` as a Spark SQL string literal (quotes and backslashes escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _ensure_database(session: SparkSession, settings: ThimbleSettings) -> None:
    """Create the warehouse's database in ``warehouse.location`` unless it exists.

    The location is spelled out because a Spark Connect server's own warehouse folder may differ from
    this process's settings; in process it is the default location anyway.
    """
    database = settings.warehouse.database
    location = Path(settings.warehouse.location).resolve() / f"{database}.db"
    try:
        name = "`" + database.replace("`", "``") + "`"
        session.sql(f"CREATE DATABASE IF NOT EXISTS {name} LOCATION {sql_string(str(location))}")
    except Exception as exc:
        if not uses_connect(session):
            raise
        raise ServiceUnavailableError(
            f"{settings.spark.remote} ({_remote_origin()}) does not answer as a Spark Connect server: "
            f"{_grpc_reason(exc)}"
        ) from None


def _grpc_reason(exc: BaseException) -> str:
    """Why the first request failed, on one line: Spark's reason, else gRPC's status and details."""
    failure = spark_failure(exc)
    if failure is not None and failure.condition is not None:
        return failure.reason
    for cause in (exc.__cause__, exc.__context__):
        code, details = getattr(cause, "code", None), getattr(cause, "details", None)
        if callable(code) and callable(details):
            text = " ".join(str(details() or "").split())
            return f"gRPC {getattr(code(), 'name', code())}: {text[:300]}"
    return " ".join(str(exc).split())[:300] or type(exc).__name__
