"""A bounded local file of Kafka records that could not be delivered, claimed back for re-sending.

Each process appends to ``<folder>/<pid>.jsonl`` (one ``{"key", "value"}`` JSON object a line). To re-send,
a process claims its own file and those of dead processes by renaming them ``<name>.sending-<pid>``, then
reads a claimed file a slice at a time from where it left off; a claimed file is deleted once every record
in it was delivered (records that fail again are spilled anew), and what was never read goes back to the
process's own file when it stops. A crash between delivery and deletion re-sends a file: at-least-once,
never lost.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import orjson

Record = tuple[bytes | None, bytes]
_OWNER = re.compile(r"(\d+)\.jsonl(?:\.\d+)?(?:\.sending-(\d+))?")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SpillFile:
    """Undeliverable records on disk, at most ``max_bytes`` in the folder."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.path = folder / f"{os.getpid()}.jsonl"
        self._out: IO[bytes] | None = None
        self._size: int | None = None
        self._claimed: set[Path] = set()
        self.unreadable = 0
        """Lines read back that are not records (cut short by a crash): for the owner to count as lost."""

    def _used(self) -> int:
        if self._size is None:
            self._size = (
                sum(p.stat().st_size for p in self.folder.iterdir() if p.is_file())
                if self.folder.exists()
                else 0
            )
        return self._size

    def write(self, records: Sequence[Record]) -> int:
        """Append ``(key, value)`` records (values are JSON); return how many fit under the size bound."""
        lines = []
        used = self._used()
        for key, value in records:
            line = (
                orjson.dumps({"key": key.decode() if key else None, "value": orjson.Fragment(value)}) + b"\n"
            )
            if used + len(line) > self.max_bytes:
                break
            used += len(line)
            lines.append(line)
        if lines:
            if self._out is None:
                self.folder.mkdir(parents=True, exist_ok=True)
                self._out = self.path.open("ab")
            self._out.write(b"".join(lines))
            self._out.flush()
            self._size = used
        return len(lines)

    def pending(self) -> bool:
        """Whether this process's file or a dead process's file waits to be re-sent."""
        return any(True for _ in self._claimable())

    def _claimable(self) -> list[Path]:
        if not self.folder.exists():
            return []
        me = os.getpid()
        out = []
        for p in self.folder.iterdir():
            m = _OWNER.fullmatch(p.name)
            if m is None:
                continue
            owner = int(m.group(2) or m.group(1))
            if owner == me:  # (a claimed file of an earlier process with this pid is claimable too)
                if p not in self._claimed and p.stat().st_size > 0:
                    out.append(p)
            elif not _alive(owner):
                out.append(p)
        return out

    def claim(self) -> list[Path]:
        """Take the waiting files; read them with :meth:`read`, forget them with :meth:`done`."""
        if self._out is not None:
            self._out.close()
            self._out = None
        claimed = []
        for path in self._claimable():
            base = path.name.split(".sending-")[0]
            target = path.with_name(f"{base}.sending-{os.getpid()}")
            if target.exists() and target != path:
                target = path.with_name(f"{base}.{path.stat().st_ino}.sending-{os.getpid()}")
            try:
                path.rename(target)
            except FileNotFoundError:  # another process claimed it first
                continue
            self._claimed.add(target)
            claimed.append(target)
        return claimed

    def lines(self, path: Path, offset: int = 0) -> int:
        """How many lines (records, or lines that are not) a claimed file holds from byte ``offset``: what
        is lost if it cannot be read further."""
        count = 0
        last = b"\n"
        with path.open("rb") as f:
            f.seek(offset)
            while chunk := f.read(1 << 20):
                count += chunk.count(b"\n")
                last = chunk[-1:]
        return count + (last != b"\n")

    def read(self, path: Path, offset: int, limit: int) -> tuple[list[Record], int, bool]:
        """Up to ``limit`` records of a claimed file from byte ``offset``: ``(records, next offset, at end)``.

        Records read leave the size bound: if they fail again, they are written anew.
        """
        records: list[Record] = []
        with path.open("rb") as f:
            f.seek(offset)
            while len(records) < limit:
                line = f.readline()
                if not line:
                    break
                parsed = _parse(line)
                if parsed is None:
                    self.unreadable += 1
                else:
                    records.append(parsed)
            end = f.tell()
            at_end = not f.read(1)
        if self._size is not None:
            self._size = max(0, self._size - (end - offset))
        return records, end, at_end

    def put_back(self, path: Path, offset: int) -> None:
        """Return the unread part of a claimed file (from ``offset``) to this process's file; forget the claim."""
        with path.open("rb") as f:
            f.seek(offset)
            rest = f.read()
        if rest:
            if self._out is None:
                self.folder.mkdir(parents=True, exist_ok=True)
                self._out = self.path.open("ab")
            self._out.write(rest if rest.endswith(b"\n") else rest + b"\n")
            self._out.flush()
        path.unlink(missing_ok=True)
        self._claimed.discard(path)

    def done(self, path: Path) -> None:
        """Forget a claimed file whose records were all read and settled (delivered or spilled again)."""
        path.unlink(missing_ok=True)
        self._claimed.discard(path)

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None


def _parse(line: bytes) -> Record | None:
    """A spilled record; ``None`` for a line that is not one (cut short by a crash while it was written)."""
    try:
        obj: Any = orjson.loads(line)
        key = obj["key"]
        return (key.encode() if isinstance(key, str) else None, orjson.dumps(obj["value"]))
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
