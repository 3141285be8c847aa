"""App is a declaration: it imports no engine, and the engine's modules import each other at the top."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import thimble.consumer

pytestmark = pytest.mark.unit

PACKAGE = Path(thimble.consumer.__file__).parent
ENGINE = {"_runner", "_pipeline", "_processing", "_supervisor", "testing", "cli"}


def _imports(tree: ast.AST) -> list[tuple[ast.AST, str]]:
    found: list[tuple[ast.AST, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found += [(node, node.module), *((node, f"{node.module}.{a.name}") for a in node.names)]
        elif isinstance(node, ast.Import):
            found += [(node, a.name) for a in node.names]
    return found


def test_the_app_declaration_imports_no_engine() -> None:
    tree = ast.parse((PACKAGE / "app.py").read_text())
    engines = {name for _node, name in _imports(tree) if name.rsplit(".", 1)[-1] in ENGINE}
    assert not engines


@pytest.mark.parametrize("module", ["app", "_runner", "_pipeline", "testing", "_supervisor", "cli"])
def test_no_import_of_the_package_hides_inside_a_function(module: str) -> None:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    hidden = [
        f"line {inner.lineno}: {name}"
        for func in ast.walk(tree)
        if isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef)
        for inner, name in _imports(func)
        if name.startswith("thimble.consumer")
    ]
    assert not hidden
