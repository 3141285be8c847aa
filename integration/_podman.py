"""Podman as this machine runs it: Debian's packages, and project-local configuration under the run folder.

Podman 4.3 runs here as root with ``runc`` and the ``cgroupfs`` manager (no systemd), and without
default ulimits (raising RLIMIT_NOFILE is not permitted in this sandbox). Short image names resolve to
Docker Hub's, so the stand-in images tagged ``docker.io/...`` are found locally and nothing is pulled.
Nothing under /etc is changed: ``CONTAINERS_CONF`` and ``CONTAINERS_REGISTRIES_CONF`` point at these files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from integration.errors import StackError

DEBIAN_PACKAGES = ("podman", "runc", "debootstrap", "netavark", "aardvark-dns", "iptables")

CONTAINERS_CONF = """\
# Written by integration/compose_check.py.
[containers]
default_ulimits = []

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""

REGISTRIES_CONF = """\
# Written by integration/compose_check.py.
unqualified-search-registries = ["docker.io"]
short-name-mode = "permissive"
"""


class PodmanError(StackError):
    """Podman or one of its tools failed."""


def missing_packages() -> list[str]:
    """The Debian packages podman needs here that are not installed."""
    missing = []
    for package in DEBIAN_PACKAGES:
        status = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False
        )
        if not installed(status.stdout):
            missing.append(package)
    return missing


def installed(dpkg_status: str) -> bool:
    """Whether dpkg's ``${Status}`` of a package says it is installed (a removed one says ``not-installed``)."""
    return dpkg_status.split()[-1:] == ["installed"]


def install_packages() -> None:
    """Install podman, runc and debootstrap from Debian when missing (as root, like ``./dev setup``)."""
    missing = missing_packages()
    if not missing:
        return
    if os.geteuid() != 0:
        raise PodmanError(f"run as root, or install first: apt-get install {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
    ):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise PodmanError(f"`{' '.join(argv)}` failed: {done.stderr.strip()[-500:]}")


class Podman:
    """Runs podman (and podman-compose) with the configuration files under ``conf_dir``."""

    def __init__(self, conf_dir: Path) -> None:
        conf_dir.mkdir(parents=True, exist_ok=True)
        containers_conf = conf_dir / "containers.conf"
        registries_conf = conf_dir / "registries.conf"
        containers_conf.write_text(CONTAINERS_CONF)
        registries_conf.write_text(REGISTRIES_CONF)
        self.env = {
            **os.environ,
            "CONTAINERS_CONF": str(containers_conf),
            "CONTAINERS_REGISTRIES_CONF": str(registries_conf),
        }
        podman = shutil.which("podman")
        if podman is None:
            raise PodmanError("podman is not installed: apt-get install podman runc")
        self.executable = podman

    def run(
        self, *args: str, check: bool = True, timeout: float | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``podman ARGS``, output captured; a failure raises with the tail of its output."""
        return self.call([self.executable, *args], check=check, timeout=timeout, cwd=cwd)

    def call(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float | None = None,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Any command with podman's configuration in its environment, output captured."""
        try:
            done = subprocess.run(
                list(argv),
                env={**self.env, **(env or {})},
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise PodmanError(f"`{' '.join(argv[:4])} ...` took over {timeout:.0f}s") from exc
        if check and done.returncode != 0:
            output = (done.stdout + done.stderr).strip()
            raise PodmanError(
                f"`{' '.join(argv[:4])} ...` failed (exit {done.returncode}):\n{output[-3000:]}"
            )
        return done

    def image_id(self, image: str) -> str | None:
        """The id of a local image; None when the image is not here."""
        found = self.run("image", "inspect", "--format", "{{.Id}}", image, check=False)
        return found.stdout.strip() if found.returncode == 0 else None

    def remove_replaced(self, replaced: Sequence[tuple[str, str | None]]) -> None:
        """Remove each old image id whose name now points at another image, children first (in the order
        given); an image still in use is kept."""
        for image, old in replaced:
            if old is not None and self.image_id(image) != old:
                self.run("rmi", old, check=False)

    def image_label(self, image: str, label: str) -> str | None:
        """A label of a local image; None when the image is not here."""
        found = self.run(
            "image", "inspect", "--format", f'{{{{index .Labels "{label}"}}}}', image, check=False
        )
        return found.stdout.strip() if found.returncode == 0 else None
