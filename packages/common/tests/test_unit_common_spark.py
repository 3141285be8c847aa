from pathlib import Path

import pytest

from thimble.common import ThimbleSettings
from thimble.common.spark import local_jars, spark_jars_dir

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
