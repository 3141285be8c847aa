"""podman-compose with ``depends_on`` conditions enforced as Docker Compose enforces them, on podman 4.3.

    python -m integration._podman_compose [podman-compose arguments]

podman-compose skips ``condition: service_healthy`` on podman older than 4.6 (it waits with ``podman wait
--condition=healthy``, which 4.6 added), and without systemd podman never runs health checks on its own (it
schedules them with systemd timers). Here a healthy dependency is waited for by running its health check
(``podman healthcheck run``) at the service's interval until it passes, failing once podman calls it
unhealthy (``retries`` failures in a row). ``condition: service_completed_successfully`` also requires exit
code 0, not only a stopped container, and both are read from the container's state: podman 4.3 forgets an
exit code some minutes after the container exits, after which ``podman wait`` (podman-compose's way) fails
at every try and the wait never ends. Containers are created without podman's ``--requires``: podman 4.3
fails to start a container whose required containers require others ("generating dependency graph"), and
the start order and conditions are enforced here already. Everything else is podman-compose unchanged.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
from typing import Any

import podman_compose as pc  # type: ignore[import-untyped]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|us|ns|h|m|s)")
_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
DEFAULT_INTERVAL_S = 30.0  # Docker's default health-check interval

_podman_compose_check = pc.check_dep_conditions
_podman_compose_args = pc.container_to_args


def duration_seconds(text: str) -> float:
    """A Compose duration (``5s``, ``1m30s``, ``500ms``) in seconds."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise pc.PodmanComposeError(f"not a Compose duration: {text!r}")
    return sum(float(number) * _SECONDS[unit] for number, unit in parts)


async def _podman(compose: Any, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        compose.podman.podman_path, *args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    out, _ = await process.communicate()
    return process.returncode or 0, out.decode(errors="replace").strip()


async def _wait_healthy(compose: Any, service: str) -> None:
    healthcheck = compose.services[service].get("healthcheck") or {}
    if not healthcheck.get("test"):
        raise pc.PodmanComposeError(f"service {service!r} is waited on as healthy but has no healthcheck")
    interval = duration_seconds(str(healthcheck.get("interval", "30s")))
    for container in compose.container_names_by_service[service]:
        while True:
            code, _ = await _podman(compose, "healthcheck", "run", container)
            if code == 0:
                break
            _, state = await _podman(
                compose, "inspect", "--format", "{{.State.Status}} {{.State.Health.Status}}", container
            )
            if state.startswith("created"):
                raise pc.PodmanComposeError(
                    f"dependency failed to start: container {container} never started"
                )
            if state.endswith("unhealthy"):
                raise pc.PodmanComposeError(f"dependency failed to start: container {container} is unhealthy")
            await asyncio.sleep(interval)


async def _wait_completed(compose: Any, service: str) -> None:
    for container in compose.container_names_by_service[service]:
        while True:
            _, state = await _podman(
                compose, "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", container
            )
            status, _, code = state.partition(" ")
            if status in ("exited", "stopped"):
                break
            if status in ("created", "configured"):
                raise pc.PodmanComposeError(
                    f"dependency failed to start: container {container} never started"
                )
            await asyncio.sleep(1.0)
        if code != "0":
            raise pc.PodmanComposeError(
                f"service {service!r} didn't complete successfully: container {container} exited with {code}"
            )


async def check_dep_conditions(compose: Any, deps: set[Any]) -> None:
    """Wait for ``deps`` as Docker Compose does: healthy by running health checks, completed with exit 0."""
    conditions = pc.ServiceDependencyCondition
    healthy = {dep for dep in deps if dep.condition == conditions.HEALTHY}
    completed = {dep for dep in deps if dep.condition == conditions.STOPPED}
    await _podman_compose_check(compose, deps - healthy - completed)
    for dep in completed:
        await _wait_completed(compose, dep.name)
    for dep in healthy:
        await _wait_healthy(compose, dep.name)


async def container_to_args(
    compose: Any, cnt: dict[str, Any], detached: bool = True, no_deps: bool = False
) -> list[str]:
    """podman-compose's ``podman create`` arguments, without ``--requires``."""
    args: list[str] = await _podman_compose_args(compose, cnt, detached=detached, no_deps=no_deps)
    return [arg for arg in args if not arg.startswith("--requires=")]


def main() -> None:
    """Run podman-compose with the condition checks above."""
    pc.check_dep_conditions = check_dep_conditions
    pc.container_to_args = container_to_args
    pc.main()


if __name__ == "__main__":
    main()
