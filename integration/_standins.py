"""Stand-ins for the public images docker-compose.yml and the Dockerfiles name, built here from Debian.

No registry of images is reachable here, so each public image (``python:3.11-slim-bookworm``, ``redis:7``,
``apache/kafka:4.1.1``, ``prom/prometheus:...``, the Maven build stage) is built under its own name from a
recipe in ``integration/compose/standins``: a ``debootstrap --variant=minbase bookworm`` root, Debian's
packages, and for Kafka the broker jars the local stack resolves from Maven Central. The names come from
the compose file and the Dockerfiles, so a new tag there is a new stand-in. A stand-in carries a label with
the digest of everything it was built from (recipe, context files, parent); an image whose label matches is
kept, so a machine builds them once.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import yaml

from integration._podman import Podman, PodmanError

RECIPES = Path(__file__).resolve().parent / "compose" / "standins"
LABEL = "dev.thimble.standin"
HOST_CAS = Path("/usr/local/share/ca-certificates")
ROOT_IMAGE = "localhost/thimble-standin/debian-root:bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
BUILD_TIMEOUT_S = 1200.0
DEBOOTSTRAP_TIMEOUT_S = 900.0

# Each stand-in: the recipe it is built from, keyed by the public image's repository.
RECIPE_OF = {
    "python": "python",
    "redis": "redis",
    "apache/kafka": "kafka",
    "prom/prometheus": "prometheus",
    "maven": "maven",
}
_FROM = re.compile(r"^FROM\s+(?:--platform=\S+\s+)?(\S+)", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class StandIn:
    """One image to build: its name, its recipe, the image it starts from, the files its build reads."""

    image: str
    recipe: str
    parent: str | None
    context: Callable[[Path], None] = lambda _: None


def qualified(image: str) -> str:
    """``python:3.11`` -> ``docker.io/library/python:3.11``; ``prom/prometheus:v3`` -> ``docker.io/prom/...``."""
    first = image.split("/", 1)[0]
    if "/" in image and ("." in first or ":" in first or first == "localhost"):
        return image
    return f"docker.io/{image}" if "/" in image else f"docker.io/library/{image}"


def repository(image: str) -> str:
    """``apache/kafka:4.1.1`` -> ``apache/kafka``."""
    return image.rsplit("@", 1)[0].rsplit(":", 1)[0] if ":" in image.split("/")[-1] else image


def public_images(compose_file: Path) -> list[str]:
    """Every image the compose file runs or its Dockerfiles start from, except the ones it builds."""
    document = yaml.safe_load(compose_file.read_text())
    services = document["services"].values()
    built = {service.get("image") for service in services if "build" in service}
    images = {service["image"] for service in services if service.get("image") not in built}
    for service in services:
        build = service.get("build")
        if build:
            dockerfile = compose_file.parent / build["context"] / build.get("dockerfile", "Dockerfile")
            stages = set(re.findall(r"^FROM\s.*\bAS\s+(\S+)", dockerfile.read_text(), re.I | re.M))
            images |= {image for image in _FROM.findall(dockerfile.read_text()) if image not in stages}
    return sorted(images)


def plan(images: Iterable[str], kafka_jars: Path) -> list[StandIn]:
    """The stand-ins to build, parents first."""
    wanted: list[StandIn] = []
    for image in images:
        recipe = RECIPE_OF.get(repository(image))
        if recipe is None:
            raise PodmanError(f"no stand-in recipe for {image}: add one under {RECIPES}")
        parent = "localhost/thimble-standin/java:17" if recipe in ("kafka", "maven") else None
        context = _kafka_context(kafka_jars) if recipe == "kafka" else _no_context
        wanted.append(
            StandIn(qualified(image), recipe, parent or "localhost/thimble-standin/debian:bookworm", context)
        )
    shared = [
        StandIn("localhost/thimble-standin/debian:bookworm", "debian", ROOT_IMAGE, _ca_context),
        StandIn("localhost/thimble-standin/java:17", "java", "localhost/thimble-standin/debian:bookworm"),
    ]
    return shared + sorted(wanted, key=lambda s: s.image)


def _no_context(_: Path) -> None:
    pass


def _ca_context(context: Path) -> None:
    (context / "ca").mkdir()
    for cert in sorted(HOST_CAS.glob("*.crt")) if HOST_CAS.is_dir() else []:
        shutil.copy2(cert, context / "ca" / cert.name)


def _kafka_context(jars: Path) -> Callable[[Path], None]:
    def fill(context: Path) -> None:
        if not any(jars.glob("kafka_*.jar")):
            raise PodmanError(f"the Kafka broker jars are missing from {jars}: run `./dev setup`")
        shutil.copytree(RECIPES / "kafka", context / "kafka")
        (context / "jars").mkdir()
        for jar in jars.glob("*.jar"):
            shutil.copy2(jar, context / "jars" / jar.name)

    return fill


def _digest(standin: StandIn, context: Path, parent_digest: str) -> str:
    digest = hashlib.sha256(parent_digest.encode())
    digest.update((RECIPES / f"{standin.recipe}.Containerfile").read_bytes())
    for path in sorted(p for p in context.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(context)).encode())
        digest.update(
            path.read_bytes() if path.stat().st_size < 1 << 20 else str(path.stat().st_size).encode()
        )
    return digest.hexdigest()[:32]


class StandIns:
    """Builds the stand-ins that are missing or out of date."""

    def __init__(self, podman: Podman, work_dir: Path, say: Callable[[str], None]) -> None:
        self.podman = podman
        self.work_dir = work_dir
        self.say = say
        # (image, the id it had before this run rebuilt it), in build order: see Podman.remove_replaced.
        self.replaced: list[tuple[str, str | None]] = []

    def ensure(self, standins: list[StandIn], rebuild: bool = False) -> list[str]:
        """Build what is needed, the images on one parent side by side; returns the names built."""
        built: list[str] = []
        digests = {ROOT_IMAGE: self._ensure_root(rebuild, built)}
        pending = list(standins)
        while pending:
            ready = [s for s in pending if (s.parent or ROOT_IMAGE) in digests]
            if not ready:
                raise PodmanError(f"stand-ins whose parents are never built: {[s.image for s in pending]}")
            pending = [s for s in pending if s not in ready]
            with ExitStack() as stack, ThreadPoolExecutor(max_workers=len(ready)) as pool:
                builds = []
                for standin in ready:
                    context = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=self.work_dir)))
                    standin.context(context)
                    digest = _digest(standin, context, digests[standin.parent or ROOT_IMAGE])
                    digests[standin.image] = digest
                    if rebuild or self.podman.image_label(standin.image, LABEL) != digest:
                        self.say(f"building the stand-in {standin.image}")
                        builds.append(pool.submit(self._build, standin, context, digest))
                        built.append(standin.image)
                for build in builds:
                    build.result()
        return built

    def _build(self, standin: StandIn, context: Path, digest: str) -> None:
        self.replaced.append((standin.image, self.podman.image_id(standin.image)))
        self.podman.run(
            "build",
            "--pull=never",
            "--label",
            f"{LABEL}={digest}",
            "-f",
            str(RECIPES / f"{standin.recipe}.Containerfile"),
            "-t",
            standin.image,
            str(context),
            timeout=BUILD_TIMEOUT_S,
        )

    def _ensure_root(self, rebuild: bool, built: list[str]) -> str:
        """The debootstrap root as an image; its digest is the image id (a rebuild changes everything after)."""
        if rebuild or self.podman.image_label(ROOT_IMAGE, LABEL) is None:
            self.say("building a Debian bookworm root with debootstrap")
            self.replaced.append((ROOT_IMAGE, self.podman.image_id(ROOT_IMAGE)))
            with tempfile.TemporaryDirectory(dir=self.work_dir) as folder:
                root = Path(folder) / "root"
                self.podman.call(
                    ["debootstrap", "--variant=minbase", "bookworm", str(root), DEBIAN_MIRROR],
                    timeout=DEBOOTSTRAP_TIMEOUT_S,
                )
                tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
                try:
                    imported = subprocess.run(
                        [
                            self.podman.executable,
                            "import",
                            "--change",
                            f"LABEL {LABEL}=root",
                            "-",
                            ROOT_IMAGE,
                        ],
                        stdin=tar.stdout,
                        env=self.podman.env,
                        capture_output=True,
                        text=True,
                        check=False,
                    )
                finally:
                    if tar.stdout is not None:
                        tar.stdout.close()
                    tar.wait()
                if imported.returncode != 0 or tar.returncode != 0:
                    raise PodmanError(
                        f"podman import of the Debian root failed: {imported.stderr.strip()[-500:]}"
                    )
            built.append(ROOT_IMAGE)
        return self.podman.run("image", "inspect", "--format", "{{.Id}}", ROOT_IMAGE).stdout.strip()
