"""The metrics store: one SQLite file of records per model version (saves, batch runs, serving windows).

Each record carries scalar metrics (``train.auc``, ``rows``, ``latency.p99_ms``, ``psi.input.spend_7d``,
...) and distributions (histograms of predictions). SQLite in WAL mode takes writes from several
serving workers and batch jobs at once; the dashboard reads it.

Records are JSON, which has no NaN nor infinity: a metric or histogram that is not finite (the mean of
outputs that overflow, say) is left out of its record, named in ``info["not_finite"]`` and logged. A
record that cannot be read whole (one written by an older release, a hand-edited store) is read as far
as it can be, with what could not be read in :attr:`Record.problems`.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import ValidationError

from thimble.common.logging import get_logger
from thimble.modelops._drift import Histogram
from thimble.modelops._names import shown

if TYPE_CHECKING:
    from thimble.modelops.registry import Registry

log = get_logger(__name__)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    model TEXT NOT NULL,
    version INTEGER,
    source TEXT NOT NULL,
    run_id TEXT NOT NULL,
    metrics TEXT NOT NULL,
    distributions TEXT NOT NULL,
    info TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_model ON records (model, version, time);
"""


@dataclass(frozen=True)
class Record:
    time: float
    model: str
    version: int | None
    source: str
    run_id: str
    metrics: dict[str, float]
    distributions: dict[str, Histogram]
    info: dict[str, Any]
    problems: tuple[str, ...] = ()
    """What of the stored record could not be read (it is left out of the other fields)."""


class Tracker:
    """Append and query metric records."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._create()

    @classmethod
    def for_registry(cls, registry: Registry) -> Tracker | None:
        """The store of this registry (:meth:`Registry.tracker`)."""
        return registry.tracker()

    def _create(self) -> None:
        """The file in WAL mode, with its tables: one process or thread at a time (an exclusive lock on a
        file beside it), as SQLite refuses a change of journal mode at once, without waiting, while another
        connection opens the same new file ("database is locked")."""
        with contextlib.ExitStack() as stack:
            try:
                lock = stack.enter_context(open(self.path.with_name(self.path.name + ".lock"), "a"))
            except OSError:  # a folder this process may only read: nothing to create, nothing to lock
                pass
            else:
                fcntl.flock(lock, fcntl.LOCK_EX)
            with contextlib.closing(self._connect()) as conn:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def record(
        self,
        model: str,
        version: int | None,
        source: str,
        run_id: str,
        metrics: Mapping[str, float],
        distributions: Mapping[str, Histogram] | None = None,
        info: Mapping[str, Any] | None = None,
        at: float | None = None,
    ) -> None:
        """Append a record. A metric or histogram that is not finite is left out (JSON cannot hold it),
        named in ``info["not_finite"]`` and logged; the rest is recorded."""
        if at is not None and not math.isfinite(at):
            raise ValueError(f"at={at!r}: a record's time must be a finite number of seconds")
        kept: dict[str, float] = {}
        not_finite: dict[str, str] = {}
        for k, v in metrics.items():
            if v is None:
                continue
            try:
                number = float(v)
            except OverflowError:  # an int beyond float64
                number = math.inf if v > 0 else -math.inf
            if math.isfinite(number):
                kept[k] = number
            else:
                not_finite[k] = repr(number)
        dists: dict[str, Any] = {}
        for k, h in (distributions or {}).items():
            if all(math.isfinite(x) for x in (*h.edges, *h.fractions)):
                dists[k] = h.model_dump()
            else:
                not_finite[k] = "a histogram with NaN or infinite values"
        details = dict(info or {})
        if not_finite:
            details["not_finite"] = not_finite
            log.warning(
                "metrics not recorded: they are not finite numbers",
                extra={"model": model, "model_version": version, "source": source, "metrics": not_finite},
            )
        row = (
            at if at is not None else time.time(),
            model,
            version,
            source,
            run_id,
            orjson.dumps(kept),
            orjson.dumps(dists),
            orjson.dumps(details, default=str),
        )
        with self._lock, self._connect() as conn:
            conn.execute(
                "INSERT INTO records (time, model, version, source, run_id, metrics, distributions, info) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )

    def records(
        self, model: str | None = None, version: int | None = None, source: str | None = None
    ) -> list[Record]:
        """Records, oldest first, filtered by model, version and source."""
        where, args = [], []
        for column, value in (("model", model), ("version", version), ("source", source)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = "SELECT time, model, version, source, run_id, metrics, distributions, info FROM records"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._connect() as conn:
            rows = conn.execute(sql + " ORDER BY time, id", args).fetchall()
        return [_record(*row) for row in rows]

    def models(self) -> list[tuple[str, int | None]]:
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT DISTINCT model, version FROM records ORDER BY model, version"
            ).fetchall()
        return [(m, v) for m, v in rows]


def _json_object(text: str | bytes, what: str, problems: list[str]) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        problems.append(f"{what}: not JSON ({exc})")
        return {}
    if not isinstance(value, dict):
        problems.append(f"{what}: not a JSON object")
        return {}
    return value


def _record(
    at: float,
    model: str,
    version: int | None,
    source: str,
    run_id: str,
    metrics_json: str | bytes,
    distributions_json: str | bytes,
    info_json: str | bytes,
) -> Record:
    """One stored row as a :class:`Record`: what cannot be read is left out and named in ``problems``."""
    problems: list[str] = []
    metrics: dict[str, float] = {}
    for k, v in _json_object(metrics_json, "metrics", problems).items():
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            metrics[k] = float(v)
        else:
            problems.append(f"metric {k}: {'null' if v is None else shown(v)} is not a finite number")
    distributions: dict[str, Histogram] = {}
    for k, h in _json_object(distributions_json, "distributions", problems).items():
        try:
            hist = Histogram.model_validate(h)
        except ValidationError:
            problems.append(f"distribution {k}: not a histogram")
            continue
        if len(hist.fractions) != len(hist.edges) + 1 or not all(
            math.isfinite(x) for x in (*hist.edges, *hist.fractions)
        ):
            problems.append(f"distribution {k}: not a histogram of finite numbers")
            continue
        distributions[k] = hist
    info = _json_object(info_json, "info", problems)
    not_finite = info.get("not_finite")
    if isinstance(not_finite, dict):
        problems += [f"{k}: {v} (not recorded)" for k, v in not_finite.items()]
    return Record(at, model, version, source, run_id, metrics, distributions, info, tuple(problems))
