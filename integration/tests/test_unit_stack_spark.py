"""Spark's services in the stack, without starting them: ports, layout, and what each JVM is told."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from integration._settings import StackSettings
from integration._spark import SparkConnect, SparkMaster, SparkWorker, spark_services
from integration._stack import services_named
from integration.errors import StackError

pytestmark = pytest.mark.unit


def _settings(tmp_path: Path, workers: int = 0) -> StackSettings:
    jars = tmp_path / "jars" / "spark"
    jars.mkdir(parents=True, exist_ok=True)
    (jars / "delta-spark_4.1_2.13-4.4.0.jar").write_bytes(b"")
    return StackSettings(
        run_dir=tmp_path,
        jars_dir=tmp_path / "jars",
        kafka_port=19092,
        redis_port=16379,
        spark_port=25002,
        spark_master_port=27077,
        spark_workers=workers,
    )


def test_without_workers_the_connect_server_runs_the_work_itself(tmp_path: Path) -> None:
    settings = _settings(tmp_path)

    assert [service.name for service in spark_services(settings)] == ["spark"]
    assert settings.spark_ports == [25002]
    assert SparkConnect(settings).properties()["spark.master"] == "local[2]"


def test_workers_get_a_master_and_ports_after_it(tmp_path: Path) -> None:
    settings = _settings(tmp_path, workers=2)

    names = [service.name for service in spark_services(settings)]
    assert names == ["spark-master", "spark-worker-1", "spark-worker-2", "spark"]
    assert SparkMaster(settings).ports == [27077, 27078]
    assert [SparkWorker(settings, n).ports for n in (1, 2)] == [[27079], [27080]]
    assert settings.spark_ports == [25002, 27077, 27078, 27079, 27080]
    properties = SparkConnect(settings).properties()
    assert properties["spark.master"] == "spark://127.0.0.1:27077"
    assert properties["spark.cores.max"] == "2"
    assert [s.name for s in services_named(settings, "spark")] == names


def test_the_connect_server_listens_on_loopback_with_delta_the_warehouse_and_utc(tmp_path: Path) -> None:
    properties = SparkConnect(_settings(tmp_path)).properties()

    assert properties["spark.connect.grpc.binding.address"] == "127.0.0.1"
    assert properties["spark.connect.grpc.binding.port"] == "25002"
    assert properties["spark.driver.bindAddress"] == "127.0.0.1"
    assert properties["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
    assert properties["spark.sql.warehouse.dir"] == str(tmp_path / "warehouse")
    assert (
        str(tmp_path / "metastore" / "metastore_db")
        in properties["spark.hadoop.javax.jdo.option.ConnectionURL"]
    )
    assert properties["spark.sql.session.timeZone"] == "UTC"
    assert "-Duser.timezone=UTC" in properties["spark.driver.extraJavaOptions"]
    assert "delta-spark_4.1_2.13-4.4.0.jar" in properties["spark.jars"]


def test_the_connect_servers_python_workers_run_this_interpreter(tmp_path: Path) -> None:
    import sys

    server = SparkConnect(_settings(tmp_path))

    assert server.environment()["PYSPARK_PYTHON"] == sys.executable
    assert server.properties()["spark.pyspark.python"] == sys.executable


def test_spark_can_be_left_out(tmp_path: Path) -> None:
    settings = dataclasses.replace(_settings(tmp_path, workers=2), spark=False)

    assert spark_services(settings) == []
    assert settings.spark_ports == []


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("THIMBLE_STACK_SPARK_WORKERS", "9", "THIMBLE_STACK_SPARK_WORKERS=9 is out of range"),
        ("THIMBLE_STACK_SPARK_WORKERS", "two", "is not a number of workers"),
        ("THIMBLE_STACK_SPARK", "maybe", "THIMBLE_STACK_SPARK='maybe' is neither on (1) nor off (0)"),
        ("THIMBLE_STACK_SPARK_PORT", "6379", "collide"),
        ("THIMBLE_STACK_SPARK_MASTER_PORT", "65534", "run past 65535"),
    ],
)
def test_bad_spark_settings_are_one_line_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv("THIMBLE_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("THIMBLE_STACK_SPARK_WORKERS", "2")
    monkeypatch.setenv(variable, value)

    with pytest.raises(StackError) as caught:
        StackSettings.from_env()

    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_running_stack_remembers_its_worker_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THIMBLE_RUN_DIR", str(tmp_path))
    monkeypatch.delenv("THIMBLE_STACK_SPARK_WORKERS", raising=False)
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "spark-workers").write_text("3\n")

    assert StackSettings.from_env().spark_workers == 3
    assert StackSettings.from_env(spark_workers=0).spark_workers == 0


def test_settling_waits_for_a_running_warm_up_and_tells_its_last_line(tmp_path: Path) -> None:
    server = SparkConnect(_settings(tmp_path))
    server.warm_up_log.parent.mkdir(parents=True, exist_ok=True)
    script = f"import time; time.sleep(1.0); open({str(server.warm_up_log)!r}, 'a').write('day 2\\nwarm-up done\\n')"
    warm_up = subprocess.Popen([sys.executable, "-c", script])
    server.warm_up_pid_file.write(warm_up.pid)

    assert server.settle() == "warm-up done"
    assert warm_up.poll() is not None  # it had ended: settle returned only after it


def test_settling_without_a_running_warm_up_returns_at_once(tmp_path: Path) -> None:
    server = SparkConnect(_settings(tmp_path))
    assert server.settle() is None  # never warmed up (THIMBLE_STACK_SPARK_WARMUP=0)
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    server.warm_up_pid_file.write(finished.pid)
    assert server.settle() is None  # its warm-up has ended
