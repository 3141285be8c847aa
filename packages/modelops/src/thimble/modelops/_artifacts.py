"""How a model's files are written and read back: artifacts (joblib, else cloudpickle), its function
(imported by path, else cloudpickled by value), each checked against the SHA-256 its envelope records.

These are pickles: reading them runs code, so only a trusted (or signed, verified) registry is read.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import sys
from typing import Any

import cloudpickle
import joblib

from thimble.modelops._import_path import import_object
from thimble.modelops.envelope import ArtifactInfo, ModelFunction, ModelInfo
from thimble.modelops.errors import ArtifactError, ModelLoadError


def sha256(data: bytes) -> str:
    """The hex SHA-256 of ``data`` (what an envelope records of each file)."""
    return hashlib.sha256(data).hexdigest()


def dump_artifact(key: str, value: Any) -> tuple[bytes, str]:
    """``value`` as bytes and the format that reads it back (``joblib``, else ``cloudpickle``)."""
    buf = io.BytesIO()
    try:
        joblib.dump(value, buf)
        return buf.getvalue(), "joblib"
    except (pickle.PicklingError, TypeError, AttributeError):
        try:
            return cloudpickle.dumps(value), "cloudpickle"
        except Exception as exc:
            raise ArtifactError(
                f"artifact {key!r} ({type(value).__name__}) cannot be pickled: {exc}"
            ) from None


def pickle_by_value(function: ModelFunction) -> bytes:
    """``function`` cloudpickled with its module by value, so that a process without the code loads it."""
    module = sys.modules.get(function.fn.__module__)
    by_value = module is not None and module.__name__ != "__main__"
    if by_value:
        cloudpickle.register_pickle_by_value(module)
    try:
        data: bytes = cloudpickle.dumps(function)
        return data
    except Exception as exc:
        raise ModelLoadError(
            f"model {function.name}: its function is not importable by path and cannot be pickled: {exc}"
        ) from None
    finally:
        if by_value:
            cloudpickle.unregister_pickle_by_value(module)


def import_function(info: ModelInfo) -> ModelFunction:
    """The ``@model`` function a version names by import path (``module:function``)."""
    path = info.function.import_path or ""
    try:
        target = import_object(path)
    except (ImportError, AttributeError) as exc:
        raise ModelLoadError(
            f"model {info.ref}: cannot import its function {path}: {exc}. Install the code that defines it, or save it again from here."
        ) from None
    if not isinstance(target, ModelFunction):
        raise ModelLoadError(f"model {info.ref}: {path} is not an @model function any more")
    return target


def unpickle_function(info: ModelInfo, data: bytes) -> ModelFunction:
    """A version's pickled function, after checking its hash."""
    ref = info.function
    if ref.sha256 is not None and sha256(data) != ref.sha256:
        raise ArtifactError(
            f"model {info.ref}: its pickled function is corrupt (checksum differs from the one saved)"
        )
    try:
        function = cloudpickle.loads(data)
    except Exception as exc:
        raise ModelLoadError(
            f"model {info.ref}: cannot unpickle its function ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(function, ModelFunction):
        raise ModelLoadError(f"model {info.ref}: {ref.pickle_file} does not hold an @model function")
    return function


def load_artifact(info: ModelInfo, key: str, art: ArtifactInfo, data: bytes) -> Any:
    """One artifact of a version, after checking its hash."""
    if sha256(data) != art.sha256:
        raise ArtifactError(
            f"model {info.ref}: artifact {key!r} is corrupt (checksum differs from the one saved)"
        )
    try:
        return joblib.load(io.BytesIO(data)) if art.format == "joblib" else cloudpickle.loads(data)
    except Exception as exc:
        raise ArtifactError(
            f"model {info.ref}: artifact {key!r} cannot be loaded ({type(exc).__name__}: {exc})"
        ) from None
