"""Capture the environment a model was saved in, and compare it with the one loading it."""

from __future__ import annotations

import functools
import getpass
import importlib.metadata
import platform
import socket
import subprocess
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

_ALWAYS = ("numpy", "pandas", "pydantic", "cloudpickle", "joblib", "thimble")


@functools.cache
def _distributions_by_module() -> dict[str, list[str]]:
    return {k: list(v) for k, v in importlib.metadata.packages_distributions().items()}


def _top_module(obj: Any) -> str | None:
    module = obj.__name__ if isinstance(obj, ModuleType) else getattr(obj, "__module__", None)
    if not isinstance(module, str) or not module:
        module = getattr(type(obj), "__module__", None)
    return module.split(".", 1)[0] if isinstance(module, str) and module else None


def package_versions(objects: Iterable[Any]) -> dict[str, str]:
    """Installed versions of the distributions providing ``objects`` (artifacts, the function's globals)."""
    tops = set(_ALWAYS)
    for obj in objects:
        top = _top_module(obj)
        if top and top not in sys.stdlib_module_names and top != "builtins":
            tops.add(top)
    versions: dict[str, str] = {}
    dists = _distributions_by_module()
    for top in sorted(tops):
        for dist in dists.get(top, []):
            try:
                versions[dist.lower()] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                continue
    return versions


def git_commit(where: Path) -> str | None:
    """``<sha>`` (``<sha>-dirty`` with uncommitted changes) of the repository holding ``where``."""
    folder = where if where.is_dir() else where.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha


def current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def current_host() -> str:
    return socket.gethostname()


def capture(objects: Iterable[Any], source_file: str | None) -> dict[str, Any]:
    """The context of a save: Python, platform, packages, git commit, user, host, time."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(objects),
        "git_commit": git_commit(Path(source_file)) if source_file else None,
        "user": current_user(),
        "host": socket.gethostname(),
        "created_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
    }


def compare(saved_python: str, saved_packages: dict[str, str]) -> list[str]:
    """Differences between the saved environment and this one, one readable line each."""
    problems: list[str] = []
    here = platform.python_version()
    if saved_python.split(".")[:2] != here.split(".")[:2]:
        problems.append(f"Python: saved with {saved_python}, running {here}")
    for dist, version in sorted(saved_packages.items()):
        try:
            installed = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{dist}: saved with {version}, not installed here")
            continue
        if installed != version:
            problems.append(f"{dist}: saved with {version}, running {installed}")
    return problems
