import logging
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from thimble.common import ThimbleSettings
from thimble.common.config import connect_address, load_settings
from thimble.common.errors import ConfigError, ServiceUnavailableError
from thimble.common.spark import build_spark_session, local_jars, spark_jars_dir
from thimble.testing import free_port

pytestmark = pytest.mark.unit


def test_a_second_stack_finds_the_shared_jars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = tmp_path / "shared-jars"
    (shared / "spark").mkdir(parents=True)
    jar = shared / "spark" / "delta-spark_2.13-4.4.0.jar"
    jar.write_bytes(b"")
    monkeypatch.setenv("THIMBLE_RUN_DIR", str(tmp_path / "stack2"))
    monkeypatch.setenv("THIMBLE_STACK_JARS_DIR", str(shared))
    monkeypatch.delenv("THIMBLE_SPARK__JARS", raising=False)

    assert spark_jars_dir() == shared.resolve() / "spark"
    assert local_jars(ThimbleSettings()) == [str(jar.resolve())]


def test_without_a_shared_folder_the_jars_are_in_the_run_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THIMBLE_RUN_DIR", str(tmp_path))
    monkeypatch.delenv("THIMBLE_STACK_JARS_DIR", raising=False)

    assert spark_jars_dir() == tmp_path.resolve() / "jars" / "spark"


def test_spark_remote_must_be_a_spark_connect_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THIMBLE_SPARK__REMOTE", "http://127.0.0.1:15002")

    with pytest.raises(ConfigError) as caught:
        load_settings()

    assert "spark.remote" in str(caught.value)
    assert "sc://host:15002" in str(caught.value)


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("sc://127.0.0.1:15002", ("127.0.0.1", 15002)),
        ("sc://spark.example", ("spark.example", 15002)),
        ("sc://host:443/;use_ssl=true;token=abc", ("host", 443)),
        ("sc://:15002", None),
        ("sc://host:0", None),
        ("sc://host:port", None),
        ("127.0.0.1:15002", None),
    ],
)
def test_connect_address_reads_host_and_port(url: str, address: tuple[str, int] | None) -> None:
    assert connect_address(url) == address


def test_a_refused_spark_connect_server_is_one_line_naming_the_address_and_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()
    monkeypatch.setenv("THIMBLE_SPARK__REMOTE", f"sc://127.0.0.1:{port}")

    with pytest.raises(ServiceUnavailableError) as caught:
        build_spark_session(load_settings())

    message = str(caught.value)
    assert "\n" not in message
    assert f"127.0.0.1:{port}" in message
    assert "THIMBLE_SPARK__REMOTE" in message


def test_jars_set_for_a_spark_connect_session_are_said_to_have_no_effect(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("THIMBLE_SPARK__REMOTE", f"sc://127.0.0.1:{free_port()}")
    monkeypatch.setenv("THIMBLE_SPARK__JARS", '["/opt/jars/extra.jar"]')

    with caplog.at_level(logging.WARNING), pytest.raises(ServiceUnavailableError):
        build_spark_session(load_settings())

    assert any("spark.jars has no effect over Spark Connect" in r.getMessage() for r in caplog.records)


def test_a_metastore_open_in_another_spark_process_is_one_line_before_any_jvm_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = tmp_path / "metastore" / "metastore_db" / "dbex.lck"
    lock.parent.mkdir(parents=True)
    lock.write_bytes(b"")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(lock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"held\n"
        monkeypatch.delenv("THIMBLE_SPARK__REMOTE", raising=False)
        monkeypatch.setenv("THIMBLE_WAREHOUSE__METASTORE", str(tmp_path / "metastore"))

        with pytest.raises(ServiceUnavailableError) as caught:
            build_spark_session(load_settings())
    finally:
        holder.kill()
        holder.wait()

    message = str(caught.value)
    assert "\n" not in message
    assert f"metastore in {tmp_path / 'metastore'} is open in another Spark process" in message
    assert "THIMBLE_SPARK__REMOTE=sc://127.0.0.1:15002" in message


# Derby holds its metastore with a POSIX lock on dbex.lck, as this child process does.
HOLD_LOCK = """
import fcntl, sys
handle = open(sys.argv[1], "rb+")
fcntl.lockf(handle, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


@pytest.mark.slow
def test_an_address_that_is_no_spark_connect_server_is_one_line_within_seconds(tmp_path: Path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.2)
        port = server.getsockname()[1]
        stop = threading.Event()

        def answer_like_redis() -> None:
            while not stop.is_set():
                try:
                    peer, _ = server.accept()
                except OSError:
                    continue
                with peer:
                    peer.sendall(b"-ERR unknown command\r\n")

        thread = threading.Thread(target=answer_like_redis, daemon=True)
        thread.start()
        env = {
            **os.environ,
            "THIMBLE_SPARK__REMOTE": f"sc://127.0.0.1:{port}",
            "THIMBLE_RUN_DIR": str(tmp_path),
        }
        try:
            # A process of its own: a Spark Connect session switches its whole process to Connect.
            result = subprocess.run(
                [sys.executable, "-c", TRY_SESSION], env=env, capture_output=True, text=True, timeout=240
            )
        finally:
            stop.set()
            thread.join()

    lines = result.stdout.strip().splitlines()
    assert lines, result.stderr
    assert lines[-1].startswith(f"ServiceUnavailableError: sc://127.0.0.1:{port} (THIMBLE_SPARK__REMOTE) ")
    assert "does not answer as a Spark Connect server: gRPC UNAVAILABLE" in lines[-1]
    assert "RETRIES_EXCEEDED" not in result.stderr


TRY_SESSION = """
from thimble.common.errors import ServiceUnavailableError
from thimble.common.spark import build_spark_session
try:
    build_spark_session()
except ServiceUnavailableError as exc:
    print(f"ServiceUnavailableError: {exc}")
"""


def test_the_warehouse_database_is_one_quoted_name_in_sql(tmp_path: Path) -> None:
    from thimble.common.spark import _ensure_database

    class Session:
        def __init__(self) -> None:
            self.statements: list[str] = []

        def sql(self, text: str) -> None:
            self.statements.append(text)

    settings = load_settings(
        overrides={"warehouse": {"location": str(tmp_path), "database": "w` LOCATION '/tmp' --"}}
    )
    session = Session()
    _ensure_database(session, settings)  # type: ignore[arg-type]
    [statement] = session.statements
    assert statement.startswith("CREATE DATABASE IF NOT EXISTS `w`` LOCATION '/tmp' --` LOCATION '")
