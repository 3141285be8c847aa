"""The compose check's dependency conditions and image replacement against real podman (podman and the
stand-in Debian image must be here: `./dev compose-check` installs and builds both)."""

from __future__ import annotations

import asyncio
import shutil
import types
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import podman_compose as pc  # type: ignore[import-untyped]
import pytest

from integration import _podman_compose
from integration._podman import Podman

pytestmark = pytest.mark.integration

IMAGE = "localhost/thimble-standin/debian:bookworm"


@pytest.fixture
def podman(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Podman:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (./dev compose-check installs it)")
    podman = Podman(tmp_path / "podman")
    for variable in ("CONTAINERS_CONF", "CONTAINERS_REGISTRIES_CONF"):
        monkeypatch.setenv(variable, podman.env[variable])
    if podman.run("image", "exists", IMAGE, check=False).returncode != 0:
        pytest.skip(f"{IMAGE} is not built (./dev compose-check builds it)")
    return podman


@pytest.fixture
def containers(podman: Podman) -> Iterator[dict[str, str]]:
    """Three containers by service name: one that exited 0, one that exited 3, one never started."""
    prefix = f"thimble-test-{uuid.uuid4().hex[:8]}"
    names = {service: f"{prefix}-{service}" for service in ("done", "failed", "idle")}
    try:
        for service, command in (("done", "exit 0"), ("failed", "exit 3"), ("idle", "exit 0")):
            podman.run("create", "--name", names[service], IMAGE, "sh", "-c", command)
        for service in ("done", "failed"):
            podman.run("start", "--attach", names[service], check=False)
        yield names
    finally:
        podman.run("rm", "-f", *names.values(), check=False)


def _compose(containers: dict[str, str]) -> Any:
    return types.SimpleNamespace(
        podman=types.SimpleNamespace(podman_path=shutil.which("podman")),
        container_names_by_service={service: [name] for service, name in containers.items()},
    )


def _completed(service: str) -> set[Any]:
    return {pc.ServiceDependency(service, "service_completed_successfully")}


def test_a_completed_dependency_is_read_from_the_container_state_never_from_podman_wait(
    containers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Podman 4.3 forgets an exit code minutes after the exit; podman-compose's `podman wait` then fails for ever.
    handed_on: list[set[Any]] = []

    async def podman_compose_check(compose: Any, deps: set[Any]) -> None:
        handed_on.append(set(deps))

    monkeypatch.setattr(_podman_compose, "_podman_compose_check", podman_compose_check)
    asyncio.run(
        asyncio.wait_for(_podman_compose.check_dep_conditions(_compose(containers), _completed("done")), 30)
    )
    assert all(not deps for deps in handed_on)


def test_a_dependency_that_exited_with_an_error_or_never_started_fails_the_wait(
    containers: dict[str, str],
) -> None:
    compose = _compose(containers)
    with pytest.raises(pc.PodmanComposeError, match="exited with 3"):
        asyncio.run(asyncio.wait_for(_podman_compose.check_dep_conditions(compose, _completed("failed")), 30))
    with pytest.raises(pc.PodmanComposeError, match="never started"):
        asyncio.run(asyncio.wait_for(_podman_compose.check_dep_conditions(compose, _completed("idle")), 30))


def test_a_rebuilt_image_replaces_the_old_one_instead_of_leaving_it_behind(
    podman: Podman, tmp_path: Path
) -> None:
    name = f"localhost/thimble-test-{uuid.uuid4().hex[:8]}:1"
    ids = []
    try:
        for build in ("first", "second"):
            (tmp_path / "Containerfile").write_text(f"FROM {IMAGE}\nLABEL dev.thimble.test={build}\n")
            old = podman.image_id(name)
            podman.run("build", "--pull=never", "-t", name, str(tmp_path), timeout=120)
            ids.append(podman.image_id(name))
            podman.remove_replaced([(name, old)])
        first, second = ids
        assert first is not None
        assert second not in (None, first)
        assert podman.run("image", "exists", first, check=False).returncode == 1
        assert podman.image_id(name) == second
        podman.remove_replaced([(name, second)])  # not replaced: kept
        assert podman.image_id(name) == second
    finally:
        podman.run("rmi", "-f", name, check=False)
