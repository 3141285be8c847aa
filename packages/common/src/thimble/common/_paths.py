import os
from pathlib import Path


def run_dir() -> Path:
    """The folder holding every service's data and logs: ``THIMBLE_RUN_DIR``, else ``./.run``."""
    return Path(os.environ.get("THIMBLE_RUN_DIR", ".run")).resolve()
