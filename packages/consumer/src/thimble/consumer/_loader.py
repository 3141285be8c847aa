"""Find the :class:`App` named by ``module:attr`` (or ``path/to/file.py:attr``)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from thimble.consumer.app import App
from thimble.consumer.errors import AppLoadError, HandlerSignatureError


def _import(module_ref: str) -> ModuleType:
    if module_ref.endswith(".py") or "/" in module_ref:
        path = Path(module_ref)
        if not path.is_file():
            raise AppLoadError(f"no such file: {path}")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise AppLoadError(f"cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
        return module
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_ref)
    except ModuleNotFoundError as exc:
        if exc.name and module_ref.startswith(exc.name):
            raise AppLoadError(
                f"cannot import module {module_ref!r}: no module named {exc.name!r} "
                f"(looked in the current folder {cwd} and the Python path)"
            ) from None
        raise AppLoadError(f"importing {module_ref!r} failed: {exc}") from None


def load_app(ref: str) -> App:
    """Import ``module:attr`` and return the App it names; a clear :class:`AppLoadError` otherwise."""
    module_ref, sep, attr = ref.rpartition(":")
    if not sep or not module_ref or not attr:
        raise AppLoadError(f"app path {ref!r} must look like 'module:attr', e.g. 'features:app'")
    try:
        module = _import(module_ref)
    except AppLoadError:
        raise
    except HandlerSignatureError as exc:
        raise AppLoadError(str(exc)) from None
    except Exception as exc:
        raise AppLoadError(f"importing {module_ref!r} raised {type(exc).__name__}: {exc}") from exc
    try:
        app = getattr(module, attr)
    except AttributeError:
        apps = [name for name, value in vars(module).items() if isinstance(value, App)]
        hint = f"; apps it defines: {', '.join(apps)}" if apps else "; it defines no App"
        raise AppLoadError(f"module {module_ref!r} has no attribute {attr!r}{hint}") from None
    if not isinstance(app, App):
        raise AppLoadError(f"{ref} is a {type(app).__name__}, not a thimble.consumer.App")
    return app
