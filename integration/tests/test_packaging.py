"""Each distribution builds, installs alone into a fresh environment, imports, and answers ``--help``."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
UV = Path(sys.executable).with_name("uv")
# Holds the PySpark wheel `./dev setup` builds, so no fresh environment builds PySpark from source again.
WHEELHOUSE = ROOT / ".cache" / "wheelhouse"
PACKAGES = {
    "common": None,
    "consumer": "thimble-consumer",
    "etl": "thimble-etl",
    "modelops": "thimble-modelops",
    "testing": None,
}
# Only the development-only thimble-testing registers a pytest plugin; a runtime package never does.
PYTEST_PLUGINS = {"testing": ["thimble = thimble.testing.plugin"]}


def run(*args: str | Path, cwd: Path | None = None) -> str:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=600)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    for package in PACKAGES:
        run(UV, "build", "--wheel", "--quiet", "--out-dir", dist, ROOT / "packages" / package)
    return dist


@pytest.mark.parametrize("package", list(PACKAGES))
def test_wheel_installs_alone(
    wheels: Path, tmp_path: Path, package: str, request: pytest.FixtureRequest
) -> None:
    (wheel,) = wheels.glob(f"thimble_{package}-*.whl")
    venv = tmp_path / "venv"
    request.addfinalizer(lambda: shutil.rmtree(venv, ignore_errors=True))
    run(UV, "venv", "--quiet", "--python", sys.executable, venv)
    python = venv / "bin" / "python"
    wheelhouse = ["--find-links", WHEELHOUSE] if WHEELHOUSE.is_dir() else []
    # uv keeps a wheel it read from a folder by that folder's path and the wheel's version; pytest reuses
    # its temporary paths across runs, so without a refresh a sibling could come from an older build.
    refresh = [arg for name in PACKAGES for arg in ("--refresh-package", f"thimble-{name}")]
    run(
        UV,
        "pip",
        "install",
        "--quiet",
        "--python",
        python,
        "--find-links",
        wheels,
        *wheelhouse,
        *refresh,
        wheel,
    )
    version = run(python, "-c", f"import thimble.{package} as m; print(m.__version__)").strip()
    about = (ROOT / "packages" / package / "src" / "thimble" / package / "__about__.py").read_text()
    assert f'"{version}"' in about
    installed = run(UV, "pip", "list", "--python", python)
    if package == "consumer":
        assert "pyspark" not in installed, "thimble-consumer must not pull in Spark"
    plugins = run(
        python,
        "-c",
        "from importlib.metadata import entry_points\n"
        "for e in entry_points(group='pytest11'): print(f'{e.name} = {e.value}')",
    ).splitlines()
    assert [line for line in plugins if "thimble" in line] == PYTEST_PLUGINS.get(package, [])
    cli = PACKAGES[package]
    if cli:
        help_text = run(venv / "bin" / cli, "--help")
        assert "Usage" in help_text
