"""The user's own code a model imports, sent to a Spark Connect server for its Python workers.

In process, Spark's Python workers import the user's modules from the folder the job runs in (the CLI puts
it on ``PYTHONPATH``). A Spark Connect server's workers see neither that folder nor that path: the code a
saved model is imported from (its function, its input and output types) goes to the session as a Python
artifact, as Spark Connect ships a UDF's dependencies. Installed packages are not sent: the server's
environment is expected to have them, as it has Thimble.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import io
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from thimble.modelops.envelope import LoadedModel

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

_SENT: set[tuple[str, str]] = set()
"""(session id, artifact name) already added: a session refuses a second artifact of one name."""


def user_code_tops(model: LoadedModel) -> list[Path]:
    """Where the top-level modules of the model's own code live: a package's folder or a module's file.

    Only code found outside installed distributions and the standard library: the user's project.
    """
    modules = [model.function.fn.__module__, model.input_type.__module__, model.output_type.__module__]
    installed = importlib.metadata.packages_distributions()
    out: list[Path] = []
    for top in dict.fromkeys(m.split(".", 1)[0] for m in modules):
        if top in installed or top in sys.stdlib_module_names or top in ("__main__", "builtins"):
            continue
        spec = importlib.util.find_spec(top)
        if spec is None:
            continue
        if spec.submodule_search_locations:
            out.extend(Path(p) for p in spec.submodule_search_locations)
        elif spec.origin and spec.origin.endswith(".py"):
            out.append(Path(spec.origin))
    return list(dict.fromkeys(out))


def _zipped(top: Path) -> bytes:
    """A package's folder or a module's file as a zip holding it at its root (what ``zipimport`` needs)."""
    files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            if "__pycache__" not in path.parts and path.suffix != ".pyc":
                info = zipfile.ZipInfo(str(path.relative_to(top.parent)), date_time=(1980, 1, 1, 0, 0, 0))
                archive.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def send_user_code(spark: SparkSession, model: LoadedModel) -> list[str]:
    """Add the model's own code to ``spark``'s Connect session for its Python workers; the artifacts added.

    Each artifact is named by its content: changed code reaches the session under a new name.
    """
    session_id = str(getattr(spark, "session_id", ""))
    added: list[str] = []
    with tempfile.TemporaryDirectory(prefix="thimble-code-") as folder:
        for top in user_code_tops(model):
            content = _zipped(top)
            name = f"{top.stem}-{hashlib.sha256(content).hexdigest()[:16]}.zip"
            if (session_id, name) in _SENT:
                continue
            path = Path(folder) / name
            path.write_bytes(content)
            cast(Any, spark).addArtifacts(str(path), pyfile=True)
            _SENT.add((session_id, name))
            added.append(name)
    return added
