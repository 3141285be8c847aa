"""Fixtures shared by thimble-etl's tests: unique table names and tiny JSON sources."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from thimble.etl import TableConfig, parse_table_config


@pytest.fixture
def table_name() -> str:
    return f"t_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def json_source(tmp_path: Path) -> Callable[[list[dict[str, Any]]], str]:
    """Factory: write rows as a JSON-lines file (replacing the previous ones) and return the path."""
    folder = tmp_path / "source"

    def write(rows: list[dict[str, Any]]) -> str:
        folder.mkdir(exist_ok=True)
        for old in folder.glob("*.json"):
            old.unlink()
        (folder / f"part-{uuid.uuid4().hex[:6]}.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return str(folder)

    return write


def config(**sections: Any) -> TableConfig:
    """A validated config from keyword sections (``validate_`` for ``validate``, ``schema_`` for ``schema``)."""
    data = {k.rstrip("_"): v for k, v in sections.items()}
    return parse_table_config(data)
