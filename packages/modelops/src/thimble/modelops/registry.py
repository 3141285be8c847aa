"""The model registry: an fsspec folder of immutable versions and movable aliases.

Layout under the root (a local folder or any fsspec URL)::

    <name>/versions/<n>/envelope.json     written last: a version exists once its envelope does
    <name>/versions/<n>/artifacts/<key>.joblib
    <name>/versions/<n>/function.pkl      only when the function cannot be imported by path
    <name>/versions/<n>/sample.json
    <name>/aliases/<alias>.json           {"version": n, "updated_at": ...}

Saving never overwrites a version: each save claims a new ``versions/<n>`` with the filesystem's
exclusive-create primitive (see :meth:`Registry.save`). Nothing is cached between calls, so another
process sees a new version or a moved alias as soon as it is written.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import os
import pickle
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import cloudpickle
import fsspec
import joblib
import orjson
from pydantic import ValidationError

from thimble.common.errors import ThimbleError
from thimble.common.logging import get_logger
from thimble.modelops import _drift, _environment
from thimble.modelops.envelope import (
    ArtifactInfo,
    FunctionRef,
    LoadedModel,
    ModelFunction,
    ModelInfo,
    SavedContext,
    TrainingData,
    _frame_records,
    numeric_fields,
    reference_of,
)
from thimble.modelops.errors import (
    ArtifactError,
    ModelLoadError,
    ModelNotFoundError,
    ModelOpsError,
    VersionExistsError,
)

if TYPE_CHECKING:
    from thimble.modelops.config import ModelOpsConfig

log = get_logger(__name__)
_ALIAS = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
LATEST = "latest"
# Filesystems whose mkdir fails when the folder exists, atomically on the server side
# (local: mkdir(2); WebDAV: MKCOL answers 405), so creating a version's folder claims it.
_EXCLUSIVE_MKDIR = frozenset({"file", "local", "memory", "webdav", "dav"})
# Elsewhere (object stores have no folders) a version is claimed by creating this file with mode "xb".
_CLAIM_FILE = "_claim"


@dataclass(frozen=True)
class ModelRef:
    """``name``, ``name@alias`` or ``name@<version>`` (``name`` alone means the latest version)."""

    name: str
    selector: str = LATEST

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        name, _, selector = text.strip().partition("@")
        if not name:
            raise ModelNotFoundError(
                f"{text!r} is not a model reference; use name, name@alias or name@version"
            )
        return cls(name, selector or LATEST)

    @property
    def version(self) -> int | None:
        sel = self.selector.removeprefix("v")
        return int(sel) if sel.isdigit() else None

    def __str__(self) -> str:
        return self.name if self.selector == LATEST else f"{self.name}@{self.selector}"


@dataclass(frozen=True)
class ModelSummary:
    name: str
    versions: list[int]
    aliases: dict[str, int]


def _sample_records(sample: Any, limit: int) -> list[Any]:
    if sample is None:
        return []
    if hasattr(sample, "to_dict") and hasattr(sample, "columns"):
        if len(sample) > limit:
            sample = sample.sample(n=limit, random_state=0)
        return _frame_records(sample)
    records = list(sample)
    if len(records) > limit:
        import random

        records = random.Random(0).sample(records, limit)
    return records


def _last(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def _storage_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    out = dict(options or {})
    # A config file or environment variable has no tuples: ``auth: [user, password]`` means basic auth.
    if isinstance(out.get("auth"), list) and len(out["auth"]) == 2:
        out["auth"] = tuple(out["auth"])
    return out


class Registry:
    """Models on a filesystem: save immutable versions, move aliases, load for serving or batch.

    ``url`` is a local folder or any fsspec URL; ``storage_options`` go to its filesystem
    (for ``webdav://folder``: ``base_url`` and ``auth``).
    """

    def __init__(
        self, url: str, storage_options: Mapping[str, Any] | None = None, sample_rows: int = 1000
    ) -> None:
        self.url = url
        self.storage_options = _storage_options(storage_options)
        try:
            self.fs, root = fsspec.core.url_to_fs(url, **self.storage_options)
        except (ImportError, ValueError) as exc:  # a missing package, an unknown protocol
            raise ModelOpsError(f"registry {url}: {exc}") from None
        except TypeError as exc:
            raise ModelOpsError(
                f"registry {url}: cannot open it ({exc}); give its storage options in modelops.registry_options"
            ) from None
        self.root = root.rstrip("/")
        self.sample_rows = sample_rows
        protocol = self.fs.protocol
        self._protocols = {protocol} if isinstance(protocol, str) else set(protocol)

    @classmethod
    def from_config(cls, cfg: ModelOpsConfig) -> Registry:
        """The registry a ``modelops`` settings section names, with its storage options."""
        return cls(cfg.registry, cfg.registry_options, sample_rows=cfg.sample_rows)

    @classmethod
    def open(cls, url: str | None = None) -> Registry:
        """The registry at ``url``, else the configured one (``modelops.registry``)."""
        from thimble.modelops.config import load_modelops_settings

        cfg = load_modelops_settings().modelops
        return cls(url or cfg.registry, cfg.registry_options, sample_rows=cfg.sample_rows)

    def __repr__(self) -> str:
        return f"Registry({self.url!r})"

    @property
    def is_local(self) -> bool:
        """Whether the registry is a folder on this machine."""
        return bool(self._protocols & {"file", "local"})

    # paths
    def _model_dir(self, name: str) -> str:
        return f"{self.root}/{name}"

    def _version_dir(self, name: str, version: int) -> str:
        return f"{self.root}/{name}/versions/{version}"

    # storage: every filesystem call goes through these, uncached, with errors in the registry's words
    @contextmanager
    def _storage(self, action: str) -> Iterator[None]:
        try:
            yield
        except (FileNotFoundError, FileExistsError, ThimbleError):
            raise
        except Exception as exc:
            raise ModelOpsError(
                f"registry {self.url}: cannot {action} ({type(exc).__name__}: {exc})"
            ) from exc

    def _ls(self, path: str) -> list[dict[str, Any]]:
        """Entries of a folder (``[]`` when it does not exist), listed afresh."""
        with self._storage(f"list {path}"):
            self.fs.invalidate_cache(path)
            try:
                entries: list[dict[str, Any]] = self.fs.ls(path, detail=True)
            except FileNotFoundError:
                return []
            return entries

    def _exists(self, path: str) -> bool:
        # Unlike fs.exists, a failing server is an error here, not a missing file.
        with self._storage(f"read {path}"):
            self.fs.invalidate_cache(path)
            try:
                self.fs.info(path)
            except FileNotFoundError:
                return False
            return True

    def _write(self, path: str, data: bytes, *, whole: bool = False) -> None:
        """Write a file; ``whole``: a new file that readers must never see half-written (an envelope)."""
        with self._storage(f"write {path}"):
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            tmp = f"{path}.{uuid.uuid4().hex}.tmp"
            if self.is_local:  # envelopes and aliases alike: rename replaces atomically
                self.fs.pipe_file(tmp, data)
                os.replace(tmp, path)
            elif whole and self._protocols & {"webdav", "dav"}:
                # A WebDAV server may write a PUT in place; MOVE of a file is a rename on the server.
                self.fs.pipe_file(tmp, data)
                self.fs.client.move(tmp, path)
            else:  # an object store's PUT replaces the whole object at once
                self.fs.pipe_file(path, data)

    def _read(self, path: str) -> bytes:
        with self._storage(f"read {path}"):
            data = self.fs.cat_file(path)
        assert isinstance(data, bytes)
        return data

    # reading
    def names(self) -> list[str]:
        """Model names (folders under the root), sorted."""
        return sorted(
            _last(e["name"])
            for e in self._ls(self.root)
            if e.get("type") == "directory" and not _last(e["name"]).startswith("_")
        )

    def versions(self, name: str) -> list[int]:
        """Committed versions of ``name`` (those whose envelope is written), oldest first."""
        out = []
        for e in self._ls(f"{self._model_dir(name)}/versions"):
            last = _last(e["name"])
            if last.isdigit() and self._exists(f"{e['name'].rstrip('/')}/envelope.json"):
                out.append(int(last))
        return sorted(out)

    def aliases(self, name: str) -> dict[str, int]:
        """``{alias: version}`` of ``name``."""
        out = {}
        for e in self._ls(f"{self._model_dir(name)}/aliases"):
            path = e["name"].rstrip("/")
            if path.endswith(".json"):
                try:
                    out[_last(path)[:-5]] = self._alias_version(path)
                except FileNotFoundError:
                    continue  # deleted since the listing
        return dict(sorted(out.items()))

    def _alias_version(self, path: str) -> int:
        for _ in range(5):  # a WebDAV server may show an alias while it is being rewritten
            try:
                return int(orjson.loads(self._read(path))["version"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                problem = exc
        raise ModelOpsError(f"registry {self.url}: alias file {path} is unreadable ({problem})")

    def models(self) -> list[ModelSummary]:
        return [ModelSummary(n, self.versions(n), self.aliases(n)) for n in self.names() if self.versions(n)]

    def resolve(self, ref: str | ModelRef) -> tuple[str, int]:
        """``(name, version)`` of a reference; raise :class:`ModelNotFoundError` saying what exists."""
        r = ModelRef.parse(ref) if isinstance(ref, str) else ref
        versions = self.versions(r.name)
        if not versions:
            from thimble.common.validation import did_you_mean

            known = self.names()
            hint = did_you_mean(r.name, known) or (
                f"; models: {', '.join(known)}" if known else "; the registry is empty"
            )
            raise ModelNotFoundError(f"no model {r.name!r} in {self.url}{hint}")
        if r.selector == LATEST:
            return r.name, versions[-1]
        if r.version is not None:
            if r.version not in versions:
                raise ModelNotFoundError(
                    f"{r.name} has no version {r.version}; versions: {', '.join(map(str, versions))}"
                )
            return r.name, r.version
        aliases = self.aliases(r.name)
        if r.selector not in aliases:
            listed = ", ".join(f"{a} -> {v}" for a, v in aliases.items()) or "none"
            raise ModelNotFoundError(f"{r.name} has no alias {r.selector!r}; aliases: {listed}")
        return r.name, aliases[r.selector]

    def info(self, ref: str | ModelRef) -> ModelInfo:
        name, version = self.resolve(ref)
        path = f"{self._version_dir(name, version)}/envelope.json"
        try:
            return ModelInfo.model_validate_json(self._read(path))
        except ValidationError as exc:
            raise ModelLoadError(
                f"model {name}@{version}: its envelope {path} is unreadable ({exc})"
            ) from None

    def sample(self, ref: str | ModelRef) -> list[dict[str, Any]]:
        info = self.info(ref)
        if not info.sample_file:
            return []
        rows: list[dict[str, Any]] = orjson.loads(
            self._read(f"{self._version_dir(info.name, info.version)}/{info.sample_file}")
        )
        return rows

    # aliases
    def set_alias(self, name: str, alias: str, version: int | str) -> int:
        """Point ``name@alias`` at ``version`` (a number or another reference); return the version."""
        if not _ALIAS.match(alias) or alias == LATEST or re.fullmatch(r"v?\d+", alias):
            raise ModelOpsError(
                f"alias {alias!r}: use a lowercase word such as prod or staging (not 'latest' or a number)"
            )
        _, number = self.resolve(ModelRef(name, str(version)))
        self._write(
            f"{self._model_dir(name)}/aliases/{alias}.json",
            orjson.dumps({"version": number, "updated_at": datetime.now(UTC).isoformat()}),
        )
        log.info("alias moved", extra={"model": name, "alias": alias, "model_version": number})
        return number

    def delete_alias(self, name: str, alias: str) -> None:
        path = f"{self._model_dir(name)}/aliases/{alias}.json"
        if not self._exists(path):
            raise ModelNotFoundError(f"{name} has no alias {alias!r}")
        with self._storage(f"delete {path}"):
            self.fs.rm_file(path)

    # saving
    def _allocate(self, name: str) -> int:
        """Claim the next free version number of ``name``: two writers never get the same one."""
        base = f"{self._model_dir(name)}/versions"
        with self._storage(f"create {base}"):
            self.fs.makedirs(base, exist_ok=True)
        taken = [int(last) for e in self._ls(base) if (last := _last(e["name"])).isdigit()]
        version = max(taken, default=0) + 1
        for _ in range(100):
            try:
                self._claim(self._version_dir(name, version))
                return version
            except FileExistsError:
                version += 1
        raise VersionExistsError(f"could not allocate a new version of {name} in {self.url}")

    def _claim(self, vdir: str) -> None:
        """Create ``vdir`` so that no other writer can; raise FileExistsError when it is taken."""
        if self._protocols & _EXCLUSIVE_MKDIR:
            with self._storage(f"create {vdir}"):
                try:
                    self.fs.mkdir(vdir, create_parents=False)
                except FileExistsError:
                    raise
                except Exception:
                    # e.g. a WebDAV server that answers a lost race with 500 instead of 405
                    if self._exists(vdir):
                        raise FileExistsError(vdir) from None
                    raise
            return
        marker = f"{vdir}/{_CLAIM_FILE}"
        with self._storage(f"create {marker}"):
            try:
                # Atomic where the filesystem maps "xb" to a conditional write (If-None-Match: *).
                with self.fs.open(marker, "xb") as f:
                    f.write(self.url.encode())
            except (NotImplementedError, ValueError):
                if self._exists(marker):
                    raise FileExistsError(marker) from None
                log.warning(
                    "this filesystem has no exclusive create: concurrent saves may race",
                    extra={"registry": self.url},
                )
                self.fs.pipe_file(marker, self.url.encode())

    def _dump_artifact(self, key: str, value: Any) -> tuple[bytes, str]:
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

    def save(
        self,
        function: ModelFunction,
        *,
        artifacts: Mapping[str, Any] | None = None,
        training_data: str | None = None,
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, Any] | None = None,
        sample: Any = None,
        aliases: Sequence[str] = (),
        pickle_function: bool = False,
    ) -> ModelInfo:
        """Store ``function`` with its artifacts and context as the next version of its name.

        The version number is claimed before anything is written, so a save never overwrites one; the
        envelope is written last, and the version exists for readers once it is.
        """
        artifacts = dict(artifacts or {})
        for key in artifacts:
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", key):
                raise ArtifactError(f"artifact name {key!r}: use letters, digits, '.', '-' and '_'")
        bad_metrics = [
            k for k, v in (metrics or {}).items() if not isinstance(v, int | float) or isinstance(v, bool)
        ]
        if bad_metrics:
            raise ModelOpsError(f"metrics must be numbers: {', '.join(bad_metrics)}")
        training = TrainingData.parse(training_data) if training_data else None
        bound = function.bind(artifacts, params)

        rows = bound.validate(_sample_records(sample, self.sample_rows)) if sample is not None else []
        outputs = bound.run(rows) if rows else []
        baseline: dict[str, _drift.Histogram] = {}
        entity = function.features.entity_key if function.features else None
        for f in numeric_fields(function.input_type):
            if f == entity:
                continue
            if (h := _drift.baseline([getattr(r, f) for r in rows if getattr(r, f) is not None])) is not None:
                baseline[f"input.{f}"] = h
        for f in numeric_fields(function.output_type):
            if (
                h := _drift.baseline([getattr(o, f) for o in outputs if getattr(o, f) is not None])
            ) is not None:
                baseline[f"output.{f}"] = h

        import_path = None if pickle_function else reference_of(function)
        blobs: dict[str, bytes] = {}
        infos: dict[str, ArtifactInfo] = {}
        for key, value in artifacts.items():
            data, fmt = self._dump_artifact(key, value)
            file = f"artifacts/{key}.{fmt}"
            blobs[file] = data
            infos[key] = ArtifactInfo(
                file=file,
                format=fmt,
                type=f"{type(value).__module__}.{type(value).__qualname__}",
                sha256=hashlib.sha256(data).hexdigest(),
                bytes=len(data),
            )
        pickle_file = None
        if import_path is None:
            blobs["function.pkl"] = self._pickle_function(function)
            pickle_file = "function.pkl"
        if rows:
            blobs["sample.json"] = orjson.dumps([r.model_dump(mode="json") for r in rows])

        env = _environment.capture(
            [*artifacts.values(), *function.fn.__globals__.values()],
            getattr(function.fn.__code__, "co_filename", None),
        )
        version = self._allocate(function.name)
        info = ModelInfo(
            name=function.name,
            version=version,
            description=function.description,
            flavor=function.flavor,
            function=FunctionRef(import_path=import_path, pickle_file=pickle_file),
            input_schema=function.input_type.model_json_schema(),
            output_schema=function.output_type.model_json_schema(),
            features=function.features,
            artifacts=infos,
            sample_file="sample.json" if rows else None,
            sample_rows=len(rows),
            baseline=baseline,
            context=SavedContext(
                **env, training_data=training, metrics=dict(metrics or {}), params=dict(params or {})
            ),
        )
        vdir = self._version_dir(function.name, version)
        for file, data in blobs.items():
            self._write(f"{vdir}/{file}", data)
        self._write(f"{vdir}/envelope.json", info.model_dump_json(indent=2).encode(), whole=True)
        for alias in aliases:
            self.set_alias(function.name, alias, version)
        self._track_save(info, outputs)
        log.info(
            "model saved", extra={"model": function.name, "model_version": version, "registry": self.url}
        )
        return info

    def _pickle_function(self, function: ModelFunction) -> bytes:
        import sys

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

    def _track_save(self, info: ModelInfo, outputs: list[Any]) -> None:
        from thimble.modelops.tracking import Tracker

        tracker = Tracker.for_registry(self)
        if tracker is None:
            return
        metrics = {f"train.{k}": v for k, v in info.context.metrics.items()}
        metrics["sample.rows"] = float(info.sample_rows)
        dists = {k: v for k, v in info.baseline.items() if k.startswith("output.")}
        tracker.record(
            info.name,
            info.version,
            "save",
            f"save-{info.version}",
            metrics,
            dists,
            {"training_data": str(info.context.training_data) if info.context.training_data else None},
        )

    # loading
    def load(self, ref: str | ModelRef) -> LoadedModel:
        """Load a version: its function, artifacts and envelope. Warns when the environment differs."""
        info = self.info(ref)
        vdir = self._version_dir(info.name, info.version)
        function = self._load_function(info, vdir)
        artifacts = {key: self._load_artifact(info, key, art, vdir) for key, art in info.artifacts.items()}
        warnings = _environment.compare(info.context.python, info.context.packages)
        if (
            function.input_type.model_json_schema() != info.input_schema
            or function.output_type.model_json_schema() != info.output_schema
        ):
            warnings.append(
                f"the code of {info.function.import_path} has changed since {info.ref} was saved: its input/output schema differs"
            )
        if warnings:
            log.warning(
                f"model {info.ref} was saved in a different environment:\n  " + "\n  ".join(warnings),
                extra={"model": info.name, "model_version": info.version},
            )
        return LoadedModel(function, info, artifacts, warnings=warnings)

    def _load_function(self, info: ModelInfo, vdir: str) -> ModelFunction:
        ref = info.function
        if ref.import_path:
            module_name, _, qualname = ref.import_path.partition(":")
            try:
                target: Any = importlib.import_module(module_name)
                for part in qualname.split("."):
                    target = getattr(target, part)
            except (ImportError, AttributeError) as exc:
                raise ModelLoadError(
                    f"model {info.ref}: cannot import its function {ref.import_path}: {exc}. Install the code that defines it, or save it again from here."
                ) from None
            if not isinstance(target, ModelFunction):
                raise ModelLoadError(
                    f"model {info.ref}: {ref.import_path} is not an @model function any more"
                )
            return target
        if not ref.pickle_file:
            raise ModelLoadError(f"model {info.ref}: the envelope names no function")
        try:
            function = cloudpickle.loads(self._read(f"{vdir}/{ref.pickle_file}"))
        except FileNotFoundError:
            raise ArtifactError(
                f"model {info.ref}: its pickled function {vdir}/{ref.pickle_file} is missing"
            ) from None
        except Exception as exc:
            raise ModelLoadError(
                f"model {info.ref}: cannot unpickle its function ({type(exc).__name__}: {exc})"
            ) from None
        if not isinstance(function, ModelFunction):
            raise ModelLoadError(f"model {info.ref}: {ref.pickle_file} does not hold an @model function")
        return function

    def _load_artifact(self, info: ModelInfo, key: str, art: ArtifactInfo, vdir: str) -> Any:
        path = f"{vdir}/{art.file}"
        try:
            data = self._read(path)
        except FileNotFoundError:
            raise ArtifactError(f"model {info.ref}: artifact {key!r} is missing ({path})") from None
        if hashlib.sha256(data).hexdigest() != art.sha256:
            raise ArtifactError(
                f"model {info.ref}: artifact {key!r} is corrupt (checksum differs from the one saved)"
            )
        try:
            return joblib.load(io.BytesIO(data)) if art.format == "joblib" else cloudpickle.loads(data)
        except Exception as exc:
            raise ArtifactError(
                f"model {info.ref}: artifact {key!r} cannot be loaded ({type(exc).__name__}: {exc})"
            ) from None
