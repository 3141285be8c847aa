"""Live rollout: served aliases follow the registry, a canary answers a sticky share, a shadow scores all.

Every ``alias_poll_s`` the server re-reads the aliases it serves (one small file each). When one moved,
the new version is loaded off the event loop and swapped in with one assignment: requests that already
hold the old version finish on it, the next ones get the new one.

A canary takes the rows whose entity falls in its share: the same rule as Thimble's A/B arms, a
SHA-256 bucket in [0, 1) of ``"<canary ref>:<entity>"``, so an entity stays on its side as long as the
share does. The sticky key is each row's own entity (the split's ``entity_key`` field): a request whose
rows fall on both sides is answered by both, row by row; a row without the key goes to the primary.
A shadow scores every answered request after the answer is sent; its predictions only reach the
prediction log.

A version no served reference names any more is retired: it leaves the server's tables at once, and once
its last request in flight is done its batcher and feature connections close, so the memory it holds
(function, artifacts) is freed.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from thimble.common.experiments import bucket
from thimble.common.logging import get_logger
from thimble.modelops.registry import ModelRef, Registry

if TYPE_CHECKING:
    from thimble.modelops.envelope import LoadedModel
    from thimble.modelops.server import ServedModel, Serving

log = get_logger(__name__)


@dataclass(frozen=True)
class Split:
    """The canary and shadow of one served reference."""

    canary: str | None
    share: float
    shadow: str | None
    entity_key: str | None

    def canary_rows(self, records: list[Any]) -> list[int]:
        """The positions of the rows the canary answers: those whose entity falls in its share. An entity
        that is not a plain value (a list or an object, which no entity key validates, nested as deep as
        JSON goes) stays on the primary, whose validation refuses it."""
        if self.canary is None or self.share <= 0 or self.entity_key is None:
            return []
        key, canary, share = self.entity_key, self.canary, self.share
        return [
            i
            for i, r in enumerate(records)
            if isinstance(r, dict)
            and isinstance(entity := r.get(key), str | int | float)
            and bucket(canary, entity) < share
        ]


class AliasFollower:
    """Keeps the served references that name an alias (or the latest version) on what the registry says."""

    def __init__(
        self,
        serving: Serving,
        registry: Registry,
        make: Callable[[LoadedModel], ServedModel],
        refs: list[str],
    ) -> None:
        self.serving = serving
        self.registry = registry
        self.make = make
        self.requested = list(refs)
        self.refs = [r for r in refs if ModelRef.parse(r).version is None]
        self.closing: set[asyncio.Task[None]] = set()

    async def follow_forever(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.check()
            except Exception as exc:
                log.error("served aliases not re-read", extra={"error": f"{type(exc).__name__}: {exc}"})

    async def check(self) -> None:
        """Swap in the version each followed reference points to now.

        A reference that cannot be followed (its alias broken, its new version unloadable) keeps serving
        what it served, and is logged; the other references still follow their aliases.
        """
        for ref in self.refs:
            try:
                await self._follow(ref)
            except Exception as exc:
                log.error(
                    "served alias not re-read", extra={"ref": ref, "error": f"{type(exc).__name__}: {exc}"}
                )

    async def _follow(self, ref: str) -> None:
        name, version = await asyncio.to_thread(self.registry.resolve, ref)
        current = self.serving.routes.get(ref)
        if current is not None and current.model.version == version:
            return
        target = self.serving.by_version.get((name, version))
        if target is None:
            loaded = await asyncio.to_thread(self.registry.load, f"{name}@{version}")
            target = self.make(loaded)
            self.serving.by_version[(name, version)] = target
        self._swap(ref, current, target)

    def _swap(self, ref: str, old: ServedModel | None, new: ServedModel) -> None:
        routes = self.serving.routes
        routes[ref] = new
        routes.setdefault(new.model.ref, new)
        if old is not None:
            for other, s in list(routes.items()):  # the bare name served as this reference follows it
                if s is old and ModelRef.parse(other).version is None:
                    routes[other] = new
        log.info(
            "serving a new version",
            extra={"ref": ref, "version": new.model.version, "previous": old.model.version if old else None},
        )
        if old is not None and not any(routes.get(r) is old for r in self.requested):
            self._retire(old)

    def _retire(self, old: ServedModel) -> None:
        """Forget a version no reference serves: close it once its requests in flight are done."""
        routes = self.serving.routes
        for other in [r for r, s in routes.items() if s is old]:
            del routes[other]
        key = (old.model.name, old.model.version or 0)
        if self.serving.by_version.get(key) is old:
            del self.serving.by_version[key]
        task = asyncio.get_running_loop().create_task(self._close_when_idle(old))
        self.closing.add(task)
        task.add_done_callback(self.closing.discard)

    async def _close_when_idle(self, old: ServedModel) -> None:
        while old.in_flight:
            await asyncio.sleep(0.05)
        await old.close()
        ref = old.model.ref
        del old  # this frame's reference: the last one once the tables and requests let go
        # Loaded models are frozen out of the collector's scans at start; let this one's cycles go.
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        log.info("version retired", extra={"model": ref})
