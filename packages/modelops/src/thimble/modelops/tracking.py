"""The metrics store: one SQLite file of records per model version (saves, batch runs, serving windows).

Each record carries scalar metrics (``train.auc``, ``rows``, ``latency.p99_ms``, ``psi.input.spend_7d``,
...) and distributions (histograms of predictions). SQLite in WAL mode takes writes from several
serving workers and batch jobs at once; the dashboard reads it.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from thimble.modelops._drift import Histogram

if TYPE_CHECKING:
    from thimble.modelops.registry import Registry

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


class Tracker:
    """Append and query metric records."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._connect() as conn:
            conn.executescript(_SCHEMA)

    @classmethod
    def for_registry(cls, registry: Registry) -> Tracker | None:
        """The store of this registry (:meth:`Registry.tracker`)."""
        return registry.tracker()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        return conn

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
        row = (
            at if at is not None else time.time(),
            model,
            version,
            source,
            run_id,
            orjson.dumps({k: float(v) for k, v in metrics.items() if v is not None}),
            orjson.dumps({k: h.model_dump() for k, h in (distributions or {}).items()}),
            orjson.dumps(dict(info or {}), default=str),
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
        return [
            Record(
                t,
                m,
                v,
                s,
                r,
                orjson.loads(mt),
                {k: Histogram.model_validate(h) for k, h in orjson.loads(d).items()},
                orjson.loads(i),
            )
            for t, m, v, s, r, mt, d, i in rows
        ]

    def models(self) -> list[tuple[str, int | None]]:
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT DISTINCT model, version FROM records ORDER BY model, version"
            ).fetchall()
        return [(m, v) for m, v in rows]
