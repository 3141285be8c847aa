"""The model registry: an fsspec folder of immutable versions and movable aliases.

Layout under the root (a local folder or any fsspec URL)::

    <name>/versions/<n>/envelope.json     written last: a version exists once its envelope does
    <name>/versions/<n>/envelope.sig      HMAC-SHA256 of the envelope, when a signing key is configured
    <name>/versions/<n>/artifacts/<key>.joblib
    <name>/versions/<n>/function.pkl      only when the function cannot be imported by path
    <name>/versions/<n>/sample.json
    <name>/aliases/<alias>.json           {"version": n, "updated_at": ...}
    <name>/alias-history/<time>-<id>.json one file per alias move: append-only, never rewritten

Saving never overwrites a version: each save claims a new ``versions/<n>`` with the filesystem's
exclusive-create primitive (see :meth:`Registry.save`). Nothing is cached between calls, so another
process sees a new version or a moved alias as soon as it is written. Every name that becomes a path is
checked against the grammar of :mod:`thimble.modelops._names`, and every path against the root.

The registry decides what is stored where; its parts do the rest: :mod:`._registry_files` (every
filesystem call, inside the root), :mod:`._alias_history` (who moved which alias, rollbacks),
:mod:`._artifacts` (pickling and hash checks), :mod:`._signing` (signatures and key ids).

Artifacts and pickled functions are pickles: loading a model runs code from the registry, so a registry
must be trusted. With a signing key, versions are signed on save and refused on load unless they verify.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from pydantic import BaseModel, Field, StrictInt, ValidationError

from thimble.common._paths import run_dir
from thimble.common.logging import get_logger
from thimble.common.validation import validation_problems
from thimble.modelops import _drift, _environment
from thimble.modelops._alias_history import AliasHistory, AliasMove
from thimble.modelops._artifacts import (
    dump_artifact,
    import_function,
    load_artifact,
    pickle_by_value,
    sha256,
    unpickle_function,
)
from thimble.modelops._column_types import numeric_fields
from thimble.modelops._names import (
    ALIAS_NAME,
    LATEST,
    MODEL_NAME,
    check_alias,
    check_model_name,
    check_selector,
    check_version,
    shown,
    version_number,
)
from thimble.modelops._registry_files import RegistryFiles, last_part
from thimble.modelops._registry_files import storage_options as _storage_options
from thimble.modelops._signing import SIGNATURE_FILE, Signer
from thimble.modelops.envelope import (
    PICKLE_FILE,
    SAMPLE_FILE,
    ArtifactInfo,
    FunctionRef,
    LoadedModel,
    ModelFunction,
    ModelInfo,
    SavedContext,
    TrainingData,
    _frame_records,
    has_nonfinite,
    reference_of,
)
from thimble.modelops.errors import (
    ArtifactError,
    BrokenEntryError,
    InvalidNameError,
    ModelLoadError,
    ModelNotFoundError,
    ModelOpsError,
    VersionExistsError,
)
from thimble.modelops.tracking import Tracker
from thimble.modelops.training import TrainingSet, TrainingSetSpec

if TYPE_CHECKING:
    from thimble.modelops.config import ModelOpsConfig

log = get_logger(__name__)
_VERSION_FOLDER = re.compile(r"[1-9][0-9]{0,8}", re.ASCII)
_ARTIFACT_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}", re.ASCII)


@dataclass(frozen=True)
class ModelRef:
    """``name``, ``name@alias`` or ``name@<version>`` (``name`` alone means the latest version)."""

    name: str
    selector: str = LATEST

    def __post_init__(self) -> None:
        check_model_name(self.name)
        check_selector(self.selector)

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        name, at, selector = text.strip().partition("@")
        if not name or (at and not selector):
            raise ModelNotFoundError(
                f"{shown(text)} is not a model reference; use name, name@alias or name@version"
            )
        return cls(name, selector or LATEST)

    @property
    def version(self) -> int | None:
        return version_number(self.selector)

    def __str__(self) -> str:
        return self.name if self.selector == LATEST else f"{self.name}@{self.selector}"


@dataclass(frozen=True)
class ModelSummary:
    """A model's versions and aliases; ``problems`` names its broken entries (shown, never raised)."""

    name: str
    versions: list[int]
    aliases: dict[str, int]
    problems: list[str] = field(default_factory=list)


class AliasRecord(BaseModel):
    """The content of ``aliases/<alias>.json``."""

    version: StrictInt = Field(ge=1)
    updated_at: str | None = None


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


def _finite(number: float) -> bool:
    try:
        return math.isfinite(number)
    except OverflowError:  # an int beyond float64
        return False


def _check_metrics(metrics: Mapping[str, Any]) -> None:
    """Refuse metrics that are not finite numbers: JSON has no NaN nor infinity (they were saved as
    ``null``, and the envelope could no longer be read)."""
    not_numbers, not_finite = [], []
    for k, v in metrics.items():
        if not isinstance(v, int | float) or isinstance(v, bool):
            not_numbers.append(str(k))
        elif not _finite(v):
            not_finite.append(f"{k}={shown(v)}")
    if not_numbers:
        raise ModelOpsError(f"metrics must be numbers: {', '.join(not_numbers)}")
    if not_finite:
        raise ModelOpsError(f"metrics must be finite numbers: {', '.join(not_finite)}")


def _check_params(params: Mapping[str, Any]) -> None:
    """Refuse params holding NaN or an infinity: the envelope's JSON would hold ``null`` instead."""
    bad = [str(k) for k, v in params.items() if has_nonfinite(v)]
    if bad:
        raise ModelOpsError(f"params must hold finite numbers only: {', '.join(bad)} holds NaN or infinity")


def _check_sample(rows: Sequence[BaseModel]) -> None:
    """Refuse sample rows holding NaN or an infinity: sample.json would hold ``null`` instead, and the
    server refuses such inputs."""
    for i, row in enumerate(rows):
        for f, v in row.__dict__.items():
            if has_nonfinite(v):
                raise ModelOpsError(
                    f"sample row {i}: {f} is {shown(v)}; sample values must be finite numbers "
                    "(drop or fill those rows)"
                )


def _baseline(key: str, values: list[Any]) -> _drift.Histogram | None:
    """The drift baseline of one field, unless its sample spans more than float64 can cut into bins."""
    with np.errstate(over="ignore", invalid="ignore"):
        hist = _drift.baseline([v for v in values if v is not None])
    if hist is not None and not all(math.isfinite(e) for e in hist.edges):
        log.warning(
            "no drift baseline: the sample's values are too far apart to cut into bins", extra={"field": key}
        )
        return None
    return hist


def _reopen(
    url: str,
    storage_options: dict[str, Any],
    sample_rows: int,
    signer: Signer | None,
    allow_unsigned: bool,
    tracking: str | None,
) -> Registry:
    registry = Registry(
        url, storage_options, sample_rows=sample_rows, allow_unsigned=allow_unsigned, tracking=tracking
    )
    registry.signer = signer
    return registry


class Registry:
    """Models on a filesystem: save immutable versions, move aliases, load for serving or batch.

    ``url`` is a local folder or any fsspec URL; ``storage_options`` go to its filesystem
    (for ``webdav://folder``: ``base_url`` and ``auth``). With ``signing_key``, saves are signed and loads
    refuse versions whose signature does not verify, and unsigned ones unless ``allow_unsigned``;
    ``previous_signing_keys`` still verify what they signed (keys rotate, see :mod:`._signing`).
    Build it from settings with :meth:`from_config` (or :meth:`open`).
    """

    def __init__(
        self,
        url: str,
        storage_options: Mapping[str, Any] | None = None,
        *,
        sample_rows: int = 1000,
        signing_key: str | bytes | None = None,
        previous_signing_keys: Sequence[str | bytes] = (),
        allow_unsigned: bool = False,
        tracking: str | None = None,
    ) -> None:
        if not isinstance(url, str) or not url.strip():
            raise ModelOpsError(
                f"registry {shown(url)}: give a folder or an fsspec URL (an empty one would be the current folder)"
            )
        self.url = url
        self.storage_options = _storage_options(storage_options)
        self.files = RegistryFiles(url, self.storage_options)
        self.fs, self.root = self.files.fs, self.files.root
        self.history = AliasHistory(self.files)
        self.sample_rows = sample_rows
        if previous_signing_keys and not signing_key:
            raise ModelOpsError("modelops.previous_signing_keys needs modelops.signing_key (the current key)")
        self.signer = Signer(signing_key, previous_signing_keys) if signing_key else None
        self.allow_unsigned = allow_unsigned
        self.tracking = tracking

    @classmethod
    def from_config(cls, cfg: ModelOpsConfig) -> Registry:
        """The registry a ``modelops`` settings section names: storage options, signing key, tracking."""
        return cls(
            cfg.registry,
            cfg.registry_options,
            sample_rows=cfg.sample_rows,
            signing_key=cfg.signing_key.get_secret_value() if cfg.signing_key else None,
            previous_signing_keys=[k.get_secret_value() for k in cfg.previous_signing_keys],
            allow_unsigned=cfg.allow_unsigned,
            tracking=cfg.tracking,
        )

    @classmethod
    def open(cls, url: str | None = None) -> Registry:
        """The registry at ``url``, else the configured one (``modelops.registry``), with the configured options."""
        from thimble.modelops.config import load_modelops_settings

        cfg = load_modelops_settings().modelops
        return cls.from_config(cfg.model_copy(update={"registry": url}) if url else cfg)

    def __reduce__(self) -> tuple[Any, ...]:
        # Spark ships the registry to its Python workers, which load the model from it themselves.
        return _reopen, (
            self.url,
            self.storage_options,
            self.sample_rows,
            self.signer,
            self.allow_unsigned,
            self.tracking,
        )

    def __repr__(self) -> str:
        return f"Registry({self.url!r})"

    @property
    def is_local(self) -> bool:
        """Whether the registry is a folder on this machine."""
        return self.files.is_local

    def _inside(self, path: str, *, resolve: bool = True) -> str:
        return self.files.inside(path, resolve=resolve)

    def _model_dir(self, name: str) -> str:
        return self._inside(f"{self.root}/{check_model_name(name)}", resolve=False)

    def _version_dir(self, name: str, version: int) -> str:
        return self._inside(f"{self._model_dir(name)}/versions/{check_version(version)}", resolve=False)

    def _alias_path(self, name: str, alias: str) -> str:
        return self._inside(f"{self._model_dir(name)}/aliases/{check_alias(alias)}.json", resolve=False)

    def _history_dir(self, name: str) -> str:
        return f"{self._model_dir(name)}/alias-history"

    # reading
    def names(self) -> list[str]:
        """Model names (folders under the root whose name is a model name, and links named like one: a link
        out of the registry is listed to be named broken, never followed), sorted."""
        return sorted(
            last
            for e in self.files.ls(self.root)
            if (e.get("type") == "directory" or e.get("islink"))
            and MODEL_NAME.fullmatch(last := last_part(e["name"]))
        )

    def versions(self, name: str) -> list[int]:
        """Committed versions of ``name`` (those whose envelope is written), oldest first; a version folder
        that leads outside the registry (a symlink) is not one (:meth:`summary` names it). A model folder or
        versions folder leading outside is a :class:`BrokenEntryError`."""
        return self._version_entries(name)[0]

    def _version_entries(self, name: str) -> tuple[list[int], list[str]]:
        """The committed versions of ``name``, and the version folders refused as links out of the registry;
        a :class:`BrokenEntryError` when the model's folder or its versions folder is such a link."""
        out, problems = [], []
        model = self._model_dir(name)
        try:
            listed = self.files.ls(f"{model}/versions")
        except InvalidNameError:
            try:
                self.files.inside(model)
                folder = f"{model}/versions"
            except InvalidNameError:
                folder = model
            raise BrokenEntryError(
                f"model {name}: the folder {folder} leads outside the registry; it is not read"
            ) from None
        for e in listed:
            last = last_part(e["name"])
            if not _VERSION_FOLDER.fullmatch(last):
                continue
            folder = self._version_dir(name, int(last))
            try:
                committed = self.files.exists(self.files.inside(f"{folder}/envelope.json"))
            except InvalidNameError:
                problems.append(
                    f"version {name}@{int(last)}: the folder {folder} leads outside the registry; it is not read"
                )
                continue
            if committed:
                out.append(int(last))
        return sorted(out), problems

    def aliases(self, name: str) -> dict[str, int]:
        """``{alias: version}`` of ``name``; an unreadable alias file is a :class:`BrokenEntryError`."""
        out: dict[str, int] = {}
        for alias, version in self._alias_entries(name).items():
            if isinstance(version, BrokenEntryError):
                raise version
            out[alias] = version
        return out

    def _alias_entries(self, name: str) -> dict[str, int | BrokenEntryError]:
        """Each alias file's version, or why it is unreadable; a :class:`BrokenEntryError` when the aliases
        folder itself is a link out of the registry (never followed: no alias of ``name`` is read)."""
        out: dict[str, int | BrokenEntryError] = {}
        folder = f"{self._model_dir(name)}/aliases"
        try:
            listed = self.files.ls(folder)
        except InvalidNameError:
            raise BrokenEntryError(
                f"aliases of {name}: the folder {folder} leads outside the registry; its aliases are not read"
            ) from None
        for e in listed:
            last = last_part(e["name"])
            alias = last.removesuffix(".json")
            if alias == last or not ALIAS_NAME.fullmatch(alias):
                continue  # not an alias file (a temporary file, a stray one)
            try:
                out[alias] = self._alias_version(name, alias)
            except FileNotFoundError:
                continue  # deleted since the listing
            except BrokenEntryError as exc:
                out[alias] = exc
        return dict(sorted(out.items()))

    def _alias_version(self, name: str, alias: str) -> int:
        path = self._alias_path(name, alias)
        problem = ""
        for _ in range(5):  # a WebDAV server may show an alias while it is being rewritten
            try:
                return AliasRecord.model_validate_json(self.files.read(path)).version
            except ValidationError as exc:
                problem = validation_problems(exc)[0]
            except InvalidNameError as exc:  # a symlink out of the registry: refused, for this alias only
                raise BrokenEntryError(f"alias {name}@{alias}: {exc}") from None
        raise BrokenEntryError(f"alias {name}@{alias}: its file {path} is unreadable ({problem})")

    def summary(self, name: str) -> ModelSummary:
        """Versions and aliases of ``name``, with its broken entries named rather than raised."""
        try:
            versions, problems = self._version_entries(name)
        except BrokenEntryError as exc:  # its folder or its versions folder is a link out of the registry
            return ModelSummary(name, [], {}, [str(exc)])
        aliases: dict[str, int] = {}
        try:
            entries = self._alias_entries(name)
        except BrokenEntryError as exc:  # the aliases folder: its versions are still listed
            entries, problems = {}, [str(exc)]
        for alias, version in entries.items():
            if isinstance(version, BrokenEntryError):
                problems.append(str(version))
            elif version not in versions:
                problems.append(f"alias {name}@{alias} points at version {version}, which does not exist")
            else:
                aliases[alias] = version
        return ModelSummary(name, versions, aliases, problems)

    def models(self) -> list[ModelSummary]:
        """Every model with at least one version; broken entries are listed in ``problems``."""
        return [s for n in self.names() if (s := self.summary(n)).versions or s.problems]

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
        listed = ", ".join(map(str, versions))
        if r.version is not None:
            if r.version not in versions:
                raise ModelNotFoundError(f"{r.name} has no version {r.version}; versions: {listed}")
            return r.name, r.version
        try:
            version = self._alias_version(r.name, r.selector)
        except FileNotFoundError:
            aliases = self.summary(r.name).aliases
            named = ", ".join(f"{a} -> {v}" for a, v in aliases.items()) or "none"
            raise ModelNotFoundError(f"{r.name} has no alias {r.selector!r}; aliases: {named}") from None
        if version not in versions:
            raise ModelNotFoundError(
                f"{r.name}@{r.selector} points at version {version}, which does not exist; versions: "
                f"{listed} (move it: thimble-modelops alias {r.name} {r.selector} <version>)"
            )
        return r.name, version

    def _envelope(self, name: str, version: int) -> tuple[ModelInfo, bytes]:
        """The envelope of ``name@version`` and its bytes (what a signature covers)."""
        path = f"{self._version_dir(name, version)}/envelope.json"
        try:
            data = self.files.read(path)
        except FileNotFoundError:
            raise ModelNotFoundError(f"model {name}@{version}: its envelope {path} is missing") from None
        try:
            info = ModelInfo.model_validate_json(data)
        except ValidationError as exc:
            raise BrokenEntryError(
                f"model {name}@{version}: its envelope {path} is unreadable ({validation_problems(exc)[0]})"
            ) from None
        if (info.name, info.version) != (name, version):
            raise BrokenEntryError(
                f"model {name}@{version}: its envelope {path} describes {info.ref}, not this version"
            )
        return info, data

    def info(self, ref: str | ModelRef) -> ModelInfo:
        """The envelope of a version: schemas, features, artifacts, context."""
        return self._envelope(*self.resolve(ref))[0]

    def check_signature(self, ref: str | ModelRef) -> ModelInfo:
        """The envelope of a version, after checking its signature when a signing key is configured.

        Raises :class:`SignatureError` when it does not verify (or is missing, unless ``allow_unsigned``).
        The envelope holds the hash of every file, which :meth:`load` checks as it reads them.
        """
        name, version = self.resolve(ref)
        info, envelope = self._envelope(name, version)
        if self.signer is not None:
            signature = self.files.read_optional(f"{self._version_dir(name, version)}/{SIGNATURE_FILE}")
            self.signer.verify(envelope, signature, info.ref, self.allow_unsigned)
        return info

    def sample(self, ref: str | ModelRef) -> list[dict[str, Any]]:
        info = self.info(ref)
        if not info.sample_file:
            return []
        data = self.files.read(f"{self._version_dir(info.name, info.version)}/{info.sample_file}")
        if info.sample_sha256 and sha256(data) != info.sample_sha256:
            raise ArtifactError(
                f"model {info.ref}: its sample is corrupt (checksum differs from the one saved)"
            )
        rows: list[dict[str, Any]] = orjson.loads(data)
        return rows

    # aliases
    def set_alias(self, name: str, alias: str, version: int | str, *, action: str = "move") -> int:
        """Point ``name@alias`` at ``version`` (a number or another reference); return the version.

        The move is recorded in the alias history with who made it and when.
        """
        path = self._alias_path(name, alias)
        _, number = self.resolve(ModelRef(name, str(version)))
        previous = self._previous(name, alias)
        self.files.write(path, orjson.dumps({"version": number, "updated_at": datetime.now(UTC).isoformat()}))
        self.history.record(
            self._history_dir(name), AliasMove(alias=alias, version=number, previous=previous, action=action)
        )
        log.info("alias moved", extra={"model": name, "alias": alias, "model_version": number})
        return number

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove ``name@alias`` (recorded in the alias history)."""
        path = self._alias_path(name, alias)
        if not self.files.exists(path):
            raise ModelNotFoundError(f"{name} has no alias {alias!r}")
        previous = self._previous(name, alias)
        self.files.remove(path)
        self.history.record(
            self._history_dir(name), AliasMove(alias=alias, previous=previous, action="delete")
        )

    def _previous(self, name: str, alias: str) -> int | None:
        try:
            return self._alias_version(name, alias)
        except (FileNotFoundError, BrokenEntryError):
            return None

    def alias_history(self, name: str, alias: str | None = None) -> list[AliasMove]:
        """Every recorded move of ``name``'s aliases (or of one alias), oldest first."""
        check_model_name(name)
        if alias is not None:
            check_alias(alias)
        return self.history.moves(self._history_dir(name), alias)

    def rollback(self, name: str, alias: str) -> int:
        """Point ``name@alias`` back at the version it pointed at before its last move; return it."""
        check_alias(alias)
        current = self._previous(name, alias)
        if current is None:
            raise ModelNotFoundError(f"{name} has no alias {alias!r} to roll back")
        target = self.history.rollback_target(self._history_dir(name), f"{name}@{alias}", alias, current)
        return self.set_alias(name, alias, target, action="rollback")

    # saving
    def _allocate(self, name: str) -> int:
        """Claim the next free version number of ``name``: two writers never get the same one."""
        base = f"{self._model_dir(name)}/versions"
        self.files.makedirs(base)
        taken = [
            int(last) for e in self.files.ls(base) if _VERSION_FOLDER.fullmatch(last := last_part(e["name"]))
        ]
        version = max(taken, default=0) + 1
        for _ in range(100):
            try:
                self.files.claim(self._version_dir(name, version))
                return version
            except FileExistsError:
                version += 1
        raise VersionExistsError(f"could not allocate a new version of {name} in {self.url}")

    def save(
        self,
        function: ModelFunction,
        *,
        artifacts: Mapping[str, Any] | None = None,
        training_data: str | None = None,
        training_set: TrainingSetSpec | TrainingSet | None = None,
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, Any] | None = None,
        sample: Any = None,
        aliases: Sequence[str] = (),
        pickle_function: bool = False,
    ) -> ModelInfo:
        """Store ``function`` with its artifacts and context as the next version of its name.

        The version number is claimed before anything is written, so a save never overwrites one; the
        envelope is written last, and the version exists for readers once it is. ``training_set`` (a
        :func:`~thimble.modelops.training.training_set` or its spec) is recorded as
        ``context.training_set``, from which the set can be rebuilt.
        """
        artifacts = dict(artifacts or {})
        for key in artifacts:
            if not isinstance(key, str) or not _ARTIFACT_KEY.fullmatch(key):
                raise ArtifactError(
                    f"artifact name {shown(str(key))}: use letters, digits, '.', '-' and '_' (at most 100)"
                )
        self._model_dir(function.name)
        for alias in aliases:
            check_alias(alias)
        _check_metrics(metrics or {})
        _check_params(params or {})
        training = TrainingData.parse(training_data) if training_data else None
        spec = training_set.spec if isinstance(training_set, TrainingSet) else training_set
        if spec is not None and not isinstance(spec, TrainingSetSpec):
            raise ModelOpsError(f"training_set: a training set or its spec, not {type(spec).__name__}")
        bound = function.bind(artifacts, params)

        rows = bound.validate(_sample_records(sample, self.sample_rows)) if sample is not None else []
        _check_sample(rows)
        outputs = bound.run(rows) if rows else []
        baseline: dict[str, _drift.Histogram] = {}
        entity = function.features.entity_key if function.features else None
        for f in numeric_fields(function.input_type):
            if f == entity:
                continue
            if (h := _baseline(f"input.{f}", [getattr(r, f) for r in rows])) is not None:
                baseline[f"input.{f}"] = h
        for f in numeric_fields(function.output_type):
            if (h := _baseline(f"output.{f}", [getattr(o, f) for o in outputs])) is not None:
                baseline[f"output.{f}"] = h

        import_path = None if pickle_function else reference_of(function)
        blobs: dict[str, bytes] = {}
        infos: dict[str, ArtifactInfo] = {}
        for key, value in artifacts.items():
            data, fmt = dump_artifact(key, value)
            file = f"artifacts/{key}.{fmt}"
            blobs[file] = data
            infos[key] = ArtifactInfo(
                file=file,
                format=fmt,
                type=f"{type(value).__module__}.{type(value).__qualname__}",
                sha256=sha256(data),
                bytes=len(data),
            )
        pickle_file = None
        if import_path is None:
            blobs[PICKLE_FILE] = pickle_by_value(function)
            pickle_file = PICKLE_FILE
        if rows:
            blobs[SAMPLE_FILE] = orjson.dumps([r.model_dump(mode="json") for r in rows])

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
            function=FunctionRef(
                import_path=import_path,
                pickle_file=pickle_file,
                sha256=sha256(blobs[PICKLE_FILE]) if pickle_file else None,
            ),
            input_schema=function.input_type.model_json_schema(),
            output_schema=function.output_type.model_json_schema(),
            features=function.features,
            artifacts=infos,
            sample_file=SAMPLE_FILE if rows else None,
            sample_sha256=sha256(blobs[SAMPLE_FILE]) if rows else None,
            sample_rows=len(rows),
            baseline=baseline,
            context=SavedContext(
                **env,
                training_data=training,
                training_set=spec,
                metrics=dict(metrics or {}),
                params=dict(params or {}),
            ),
        )
        vdir = self._version_dir(function.name, version)
        for file, data in blobs.items():
            self.files.write(f"{vdir}/{file}", data)
        envelope = info.model_dump_json(indent=2).encode()
        if self.signer is not None:
            self.files.write(f"{vdir}/{SIGNATURE_FILE}", self.signer.sign(envelope))
        self.files.write(f"{vdir}/envelope.json", envelope, whole=True)
        for alias in aliases:
            self.set_alias(function.name, alias, version)
        self._track_save(info, outputs)
        log.info(
            "model saved", extra={"model": function.name, "model_version": version, "registry": self.url}
        )
        return info

    def tracker(self) -> Tracker:
        """The metrics store of this registry: configured, else beside a local registry, else in the run folder.

        A registry built without ``tracking`` uses the configured ``modelops.tracking``, if any.
        """
        from thimble.modelops.config import load_modelops_settings

        tracking = self.tracking or load_modelops_settings().modelops.tracking
        if tracking:
            return Tracker(tracking)
        if self.is_local:
            return Tracker(Path(self.root) / "_tracking.sqlite")
        return Tracker(run_dir() / "modelops" / "tracking.sqlite")

    def _track_save(self, info: ModelInfo, outputs: list[Any]) -> None:
        tracker = self.tracker()
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
        """Load a version: its function, artifacts and envelope. Warns when the environment differs.

        With a signing key, the signature is verified before anything is unpickled.
        """
        info = self.check_signature(ref)
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
            return import_function(info)
        if not ref.pickle_file:
            raise ModelLoadError(f"model {info.ref}: the envelope names no function")
        try:
            data = self.files.read(f"{vdir}/{ref.pickle_file}")
        except FileNotFoundError:
            raise ArtifactError(
                f"model {info.ref}: its pickled function {vdir}/{ref.pickle_file} is missing"
            ) from None
        return unpickle_function(info, data)

    def _load_artifact(self, info: ModelInfo, key: str, art: ArtifactInfo, vdir: str) -> Any:
        path = f"{vdir}/{art.file}"
        try:
            data = self.files.read(path)
        except FileNotFoundError:
            raise ArtifactError(f"model {info.ref}: artifact {key!r} is missing ({path})") from None
        return load_artifact(info, key, art, data)
