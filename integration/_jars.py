"""Resolve the stack's jars with Maven: the Kafka broker, and Spark's extras (Delta Lake, Kafka connector).

Each folder under ``integration/jars`` holds a POM; ``mvn dependency:copy-dependencies`` copies its runtime
closure into ``<jars dir>/<name>``. A stamp keyed on the POM skips the work next time. Maven runs offline
first (the local repository is enough after the first time) and goes online only when that fails.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from integration._settings import POMS_DIR, StackSettings
from integration.errors import JarsError

BUNDLES = ("kafka", "spark")
STAMP = ".thimble-stamp"
MAVEN_TIMEOUT_S = 900.0
_VERSIONED = re.compile(r"^(?P<name>.+?)-\d+(?:\.\d+)+(?:[-.][A-Za-z0-9_.]+)*$")
_LOOSE = re.compile(r"^(?P<name>.+?)-\d.*$")


def artifact_name(jar: str) -> str:
    """``jackson-core-2.13.5.jar`` -> ``jackson-core``; ``spark-sql-kafka-0-10_2.13-4.1.1.jar`` -> ``spark-sql-kafka-0-10_2.13``."""
    stem = jar.removesuffix(".jar")
    match = _VERSIONED.match(stem) or _LOOSE.match(stem)
    return match.group("name") if match else stem


def pyspark_jars_dir() -> Path:
    """The ``jars`` folder inside the installed pyspark (found without importing pyspark)."""
    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        raise JarsError("pyspark is not installed in this Python environment: run `./dev setup`")
    return Path(next(iter(spec.submodule_search_locations))) / "jars"


@dataclass
class Outcome:
    """What one bundle's resolution did, for the summary."""

    bundle: str
    target: Path
    skipped: bool
    jars: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    online: bool = False


def _stamp_for(pom: Path, bundle: str) -> str:
    digest = hashlib.sha256(pom.read_bytes())
    if bundle == "spark":
        # The pruning depends on the pyspark install, so a new pyspark re-runs it.
        digest.update("\n".join(sorted(p.name for p in pyspark_jars_dir().glob("*.jar"))).encode())
    return digest.hexdigest()[:32]


def _mvn(pom: Path, out: Path, offline: bool) -> subprocess.CompletedProcess[str]:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise JarsError("Maven (mvn) is not installed: run `./dev setup` (or `apt-get install maven`)")
    argv = [
        mvn,
        "-q",
        "-B",
        *(["-o"] if offline else []),
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={out}",
    ]
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=MAVEN_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise JarsError(f"Maven took over {MAVEN_TIMEOUT_S:.0f}s resolving {pom}") from None


def _sync(source: Path, target: Path) -> None:
    """Make ``target`` hold exactly the jars of ``source``; each file is replaced atomically."""
    target.mkdir(parents=True, exist_ok=True)
    wanted = {jar.name for jar in source.glob("*.jar")}
    for name in sorted(wanted):
        shutil.copy2(source / name, target / f".{name}.tmp")
        os.replace(target / f".{name}.tmp", target / name)
    for stale in target.glob("*.jar"):
        if stale.name not in wanted:
            stale.unlink()


def resolve(settings: StackSettings, bundle: str, force: bool = False) -> Outcome:
    """Resolve one bundle (``kafka`` or ``spark``) into ``<jars dir>/<bundle>`` unless its stamp is current."""
    pom = POMS_DIR / bundle / "pom.xml"
    target = settings.jars_dir / bundle
    stamp_path = target / STAMP
    stamp = _stamp_for(pom, bundle)
    if not force and stamp_path.exists() and stamp_path.read_text().strip() == stamp:
        return Outcome(bundle, target, skipped=True, jars=sorted(j.name for j in target.glob("*.jar")))
    settings.jars_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{bundle}-", dir=settings.jars_dir) as tmp:
        out = Path(tmp)
        online = False
        result = _mvn(pom, out, offline=True)
        if result.returncode != 0:
            online = True
            result = _mvn(pom, out, offline=False)
        if result.returncode != 0:
            output = "\n".join((result.stdout + result.stderr).strip().splitlines()[-30:])
            raise JarsError(f"Maven could not resolve {pom} (exit {result.returncode}):\n{output}")
        dropped: list[str] = []
        if bundle == "spark":
            shipped = {artifact_name(jar.name) for jar in pyspark_jars_dir().glob("*.jar")}
            for jar in sorted(out.glob("*.jar")):
                if artifact_name(jar.name) in shipped:
                    dropped.append(jar.name)
                    jar.unlink()
        _sync(out, target)
    stamp_path.write_text(stamp + "\n")
    return Outcome(
        bundle,
        target,
        skipped=False,
        jars=sorted(j.name for j in target.glob("*.jar")),
        dropped=dropped,
        online=online,
    )


def present(settings: StackSettings, bundle: str) -> list[Path]:
    """The jars of a bundle now on disk."""
    return sorted((settings.jars_dir / bundle).glob("*.jar"))
