"""The history of a model's aliases: one file per move, with who and when; what a rollback goes back to.

Each move (or delete) is a new file ``<name>/alias-history/<time>-<random id>.json``: the history is
append-only, and concurrent moves never overwrite each other's entry.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

from pydantic import BaseModel, Field, ValidationError

from thimble.common.logging import get_logger
from thimble.common.text import cut
from thimble.modelops import _environment
from thimble.modelops._names import ALIAS_NAME
from thimble.modelops._registry_files import RegistryFiles, last_part
from thimble.modelops.errors import ModelOpsError

log = get_logger(__name__)
_ENTRY = re.compile(r"[0-9T.Z]+-[0-9a-f]{12}\.json")


class AliasMove(BaseModel):
    """One line of an alias's history: who pointed it where, when (``version`` is None for a delete)."""

    alias: str = Field(pattern=f"^{ALIAS_NAME.pattern}$")
    version: int | None = Field(default=None, ge=1)
    previous: int | None = Field(default=None, ge=1)
    action: str = "move"
    user: str = ""
    host: str = ""
    at: str = ""


class AliasHistory:
    """The alias history of the models under one registry root (``folder``: a model's history folder)."""

    def __init__(self, files: RegistryFiles) -> None:
        self.files = files

    def record(self, folder: str, move: AliasMove) -> None:
        """Append ``move``, stamped with the current user, host and time."""
        now = datetime.now(UTC)
        move = move.model_copy(
            update={
                "user": _environment.current_user(),
                "host": _environment.current_host(),
                "at": now.isoformat(timespec="microseconds"),
            }
        )
        file = f"{now.strftime('%Y%m%dT%H%M%S.%fZ')}-{uuid.uuid4().hex[:12]}.json"
        self.files.write(f"{folder}/{file}", move.model_dump_json().encode())

    def moves(self, folder: str, alias: str | None = None) -> list[AliasMove]:
        """Every recorded move (of ``alias``, or of all), oldest first; unreadable entries are skipped."""
        moves = []
        for e in sorted(self.files.ls(folder), key=lambda e: last_part(e["name"])):
            last = last_part(e["name"])
            if not _ENTRY.fullmatch(last):
                continue
            try:
                move = AliasMove.model_validate_json(self.files.read(f"{folder}/{last}"))
            except (FileNotFoundError, ValidationError) as exc:
                log.warning(
                    "alias history entry unreadable",
                    extra={"file": last, "error": cut(str(exc), 200, count=True)},
                )
                continue
            if alias is None or move.alias == alias:
                moves.append(move)
        return moves

    def rollback_target(self, folder: str, ref: str, alias: str, current: int) -> int:
        """The version ``alias`` pointed at before the move that made it ``current``."""
        last = next((m for m in reversed(self.moves(folder, alias)) if m.version == current), None)
        if last is None or last.previous is None or last.previous == current:
            raise ModelOpsError(f"{ref} -> {current} has no earlier version in its history to roll back to")
        return last.previous
