import os
from pathlib import Path


def run_dir() -> Path:
    """The folder holding every service's data and logs: ``THIMBLE_RUN_DIR``, else ``./.run``."""
    return Path(os.environ.get("THIMBLE_RUN_DIR", ".run")).resolve()


def jars_dir() -> Path:
    """The folder of resolved jars: ``THIMBLE_STACK_JARS_DIR`` (shared by stacks), else ``<run dir>/jars``."""
    shared = os.environ.get("THIMBLE_STACK_JARS_DIR")
    return Path(shared).resolve() if shared else run_dir() / "jars"
