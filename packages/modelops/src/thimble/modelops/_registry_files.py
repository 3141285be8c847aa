"""The registry's file layer: every filesystem call the registry makes, uncached, inside its root.

Paths are built from checked names by the registry; :meth:`RegistryFiles.inside` refuses any path that
leaves the root (locally after following symlinks), and every call turns a filesystem's own exception
into one line naming the registry. Writes that readers must see whole are renamed into place.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import fsspec

from thimble.common.errors import ThimbleError
from thimble.common.logging import get_logger
from thimble.modelops._names import shown
from thimble.modelops.errors import InvalidNameError, ModelOpsError

log = get_logger(__name__)
# Filesystems whose mkdir fails when the folder exists, atomically on the server side
# (local: mkdir(2); WebDAV: MKCOL answers 405), so creating a version's folder claims it.
_EXCLUSIVE_MKDIR = frozenset({"file", "local", "memory", "webdav", "dav"})
# Elsewhere (object stores have no folders) a version is claimed by creating this file with mode "xb".
_CLAIM_FILE = "_claim"


def last_part(path: str) -> str:
    """The last component of a path."""
    return path.rstrip("/").rsplit("/", 1)[-1]


def storage_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """fsspec storage options from settings (``auth: [user, password]`` becomes basic auth)."""
    out = dict(options or {})
    # A config file or environment variable has no tuples: ``auth: [user, password]`` means basic auth.
    if isinstance(out.get("auth"), list) and len(out["auth"]) == 2:
        out["auth"] = tuple(out["auth"])
    return out


class RegistryFiles:
    """The files under a registry's root, on a local folder or any fsspec filesystem."""

    def __init__(self, url: str, options: dict[str, Any]) -> None:
        self.url = url
        try:
            self.fs, root = fsspec.core.url_to_fs(url, **options)
        except (ImportError, ValueError) as exc:  # a missing package, an unknown protocol
            raise ModelOpsError(f"registry {url}: {exc}") from None
        except TypeError as exc:
            raise ModelOpsError(
                f"registry {url}: cannot open it ({exc}); give its storage options in modelops.registry_options"
            ) from None
        self.root: str = root.rstrip("/")
        protocol = self.fs.protocol
        self.protocols = {protocol} if isinstance(protocol, str) else set(protocol)
        self.is_local = bool(self.protocols & {"file", "local"})
        self._real_root = os.path.realpath(self.root) if self.is_local else None

    def inside(self, path: str, *, resolve: bool = True) -> str:
        """``path`` when it stays under the root, as written and (``resolve``) with local symlinks followed.

        Paths built from checked names stay under the root as written; following symlinks costs a system
        call per folder, so it is done where a file or folder is opened, listed, written or deleted.
        """
        checks = [(posixpath.normpath(path), posixpath.normpath(self.root or "/"))]
        if resolve and self._real_root is not None:
            checks.append((os.path.realpath(path), self._real_root))
        for resolved, root in checks:
            if resolved != root and not resolved.startswith(root.rstrip("/") + "/"):
                raise InvalidNameError(f"{shown(path)} is outside the registry {self.url}")
        return path

    @contextmanager
    def storage(self, action: str) -> Iterator[None]:
        """Turn a filesystem's failure into one line naming the registry and the action."""
        try:
            yield
        except (FileNotFoundError, FileExistsError, ThimbleError):
            raise
        except Exception as exc:
            raise ModelOpsError(
                f"registry {self.url}: cannot {action} ({type(exc).__name__}: {exc})"
            ) from exc

    def ls(self, path: str) -> list[dict[str, Any]]:
        """Entries of a folder (``[]`` when it does not exist), listed afresh."""
        self.inside(path)
        with self.storage(f"list {path}"):
            self.fs.invalidate_cache(path)
            try:
                entries: list[dict[str, Any]] = self.fs.ls(path, detail=True)
            except (FileNotFoundError, NotADirectoryError):
                return []
            return entries

    def exists(self, path: str) -> bool:
        """Whether ``path`` exists; unlike ``fs.exists``, a failing server is an error, not a missing file."""
        self.inside(path, resolve=False)
        with self.storage(f"read {path}"):
            self.fs.invalidate_cache(path)
            try:
                self.fs.info(path)
            except FileNotFoundError:
                return False
            return True

    def write(self, path: str, data: bytes, *, whole: bool = False) -> None:
        """Write a file; ``whole``: a new file that readers must never see half-written (an envelope)."""
        self.inside(path)
        with self.storage(f"write {path}"):
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            tmp = f"{path}.{uuid.uuid4().hex}.tmp"
            if self.is_local:  # envelopes and aliases alike: rename replaces atomically
                self.fs.pipe_file(tmp, data)
                os.replace(tmp, path)
            elif whole and self.protocols & {"webdav", "dav"}:
                # A WebDAV server may write a PUT in place; MOVE of a file is a rename on the server.
                self.fs.pipe_file(tmp, data)
                self.fs.client.move(tmp, path)
            else:  # an object store's PUT replaces the whole object at once
                self.fs.pipe_file(path, data)

    def read(self, path: str) -> bytes:
        self.inside(path)
        with self.storage(f"read {path}"):
            data = self.fs.cat_file(path)
        assert isinstance(data, bytes)
        return data

    def read_optional(self, path: str) -> bytes | None:
        try:
            return self.read(path)
        except (FileNotFoundError, IsADirectoryError):
            return None

    def remove(self, path: str) -> None:
        with self.storage(f"delete {self.inside(path)}"):
            self.fs.rm_file(path)

    def makedirs(self, path: str) -> None:
        with self.storage(f"create {self.inside(path)}"):
            self.fs.makedirs(path, exist_ok=True)

    def claim(self, folder: str) -> None:
        """Create ``folder`` so that no other writer can; raise FileExistsError when it is taken."""
        self.inside(folder)
        if self.protocols & _EXCLUSIVE_MKDIR:
            with self.storage(f"create {folder}"):
                try:
                    self.fs.mkdir(folder, create_parents=False)
                except FileExistsError:
                    raise
                except Exception:
                    # e.g. a WebDAV server that answers a lost race with 500 instead of 405
                    if self.exists(folder):
                        raise FileExistsError(folder) from None
                    raise
            return
        marker = f"{folder}/{_CLAIM_FILE}"
        with self.storage(f"create {marker}"):
            try:
                # Atomic where the filesystem maps "xb" to a conditional write (If-None-Match: *).
                with self.fs.open(marker, "xb") as f:
                    f.write(self.url.encode())
            except (NotImplementedError, ValueError):
                if self.exists(marker):
                    raise FileExistsError(marker) from None
                log.warning(
                    "this filesystem has no exclusive create: concurrent saves may race",
                    extra={"registry": self.url},
                )
                self.fs.pipe_file(marker, self.url.encode())
