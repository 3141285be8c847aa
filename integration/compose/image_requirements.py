"""The third-party requirements of Thimble packages, read from their pyproject.toml files alone.

    python image_requirements.py /src/common[spark] /src/etl ... > requirements.txt

Each argument is a package folder holding a ``pyproject.toml`` (its sources need not be there yet), with
the extras to install in brackets. Prints every requirement those packages need, one a line: their
build backend's, then their dependencies', following the requirements (and extras) that name one of the
given packages instead of printing them. The Dockerfiles install these in a layer of their own before they
copy the sources, so that a change of source does not reinstall the dependencies. A Thimble package
required but not given is an error: the image would lack it. Standard library only: it runs in the base
image before anything is installed.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

_SPEC = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")
_FOLDER = re.compile(r"^(.+?)(?:\[([^\]]*)\])?$")
USAGE = "usage: python image_requirements.py FOLDER[EXTRA,...] ... > requirements.txt"


def canonical(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _extras(text: str | None) -> set[str]:
    return {canonical(e.strip()) for e in (text or "").split(",") if e.strip()}


def split(spec: str) -> tuple[str, set[str]]:
    """``name[extra,...]>=1`` -> (canonical name, extras)."""
    match = _SPEC.match(spec)
    if match is None:
        raise ValueError(f"not a requirement: {spec!r}")
    return canonical(match.group(1)), _extras(match.group(2))


def _folder(spec: str) -> tuple[Path, set[str]]:
    """``/src/common[spark]`` -> (folder, extras)."""
    match = _FOLDER.match(spec)
    if match is None:
        raise ValueError(f"not a package folder: {spec!r}")
    return Path(match.group(1)), _extras(match.group(2))


def requirements(specs: list[str]) -> list[str]:
    """The third-party requirements of the packages at ``specs`` (folder[extras]), in a stable order."""
    needs_of: dict[str, dict[str, list[str]]] = {}  # package -> extra ("" for none) -> requirements
    wanted: list[tuple[str, str]] = []
    out: list[str] = []
    for spec in specs:
        folder, extras = _folder(spec)
        pyproject = folder / "pyproject.toml"
        document = tomllib.loads(pyproject.read_text())
        project = document.get("project", {})
        if "name" not in project:
            raise ValueError(f"{pyproject}: no [project] name")
        name = canonical(project["name"])
        optional = project.get("optional-dependencies", {})
        needs_of[name] = {"": list(project.get("dependencies", []))}
        needs_of[name].update({canonical(extra): list(needs) for extra, needs in optional.items()})
        wanted += [(name, extra) for extra in ["", *sorted(extras)]]
        out += document.get("build-system", {}).get("requires", [])
    seen: set[tuple[str, str]] = set()
    while wanted:
        name, extra = wanted.pop(0)
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        if extra not in needs_of[name]:
            raise ValueError(f"{name} has no extra [{extra}]")
        for need in needs_of[name][extra]:
            other, other_extras = split(need)
            if not other.startswith("thimble-"):
                out.append(need)
            elif other not in needs_of:
                raise ValueError(f"{name} requires {other}, which is not among the packages given")
            else:
                wanted += [(other, e) for e in ["", *sorted(other_extras)]]
    return list(dict.fromkeys(out))


def main(argv: list[str]) -> int:
    if not argv:
        print(USAGE, file=sys.stderr)
        return 2
    try:
        print("\n".join(requirements(argv)))
    except (OSError, ValueError) as exc:
        print(f"image_requirements.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
