"""One call configures a process's logging: JSON lines off a TTY, a readable console on a TTY.

Every record carries the package, its version and the context bound with :func:`bind_context`
(topic/partition/offset, table, model, ...). Registered secrets never reach a log line.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal

import orjson

from thimble.common.text import TERMINAL_CONTROLS, escape_controls

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_context: ContextVar[Mapping[str, Any]] = ContextVar("thimble_log_context", default=_EMPTY)
_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_SECRET_KEY = re.compile(r"(?i)(password|passwd|secret|token|api[_-]?key|credential)")
_SECRET_ASSIGNMENT = re.compile(
    r"(?i)((?:password|passwd|secret|token|api[_-]?key)[\"']?\s*[=:]\s*[\"']?)([^\s\"',;}]+)"
)
REDACTED = "***"
_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
# JSON escapes C0 controls itself; the rest of what a terminal acts on (DEL, C1 controls, line
# separators, bidi overrides) is written as \u escapes too, so a line read with ``tail`` shows as it is.
_JSON_ESCAPES = {c: f"\\u{c:04x}" for c in TERMINAL_CONTROLS if c >= 0x7F}


def register_secret(value: str) -> None:
    """Never let ``value`` appear in a log line (settings register their ``SecretStr`` values)."""
    if len(value) >= 4:
        with _secrets_lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """Mask registered secrets and ``password=...``-style assignments in ``text``."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return _SECRET_ASSIGNMENT.sub(lambda m: m.group(1) + REDACTED, text)


class bind_context:
    """Attach ``values`` to every record logged inside the ``with`` block (this thread or task only)."""

    __slots__ = ("_token", "_values")

    def __init__(self, **values: Any) -> None:
        self._values = values

    def __enter__(self) -> None:
        current = _context.get()
        self._token = _context.set({**current, **self._values} if current else self._values)

    def __exit__(self, *exc: object) -> None:
        _context.reset(self._token)


def current_context() -> Mapping[str, Any]:
    """The context bound in this thread or task."""
    return _context.get()


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = dict(getattr(record, "thimble_static", {}))
    fields.update(getattr(record, "thimble_context", {}))
    fields.update(
        {k: v for k, v in record.__dict__.items() if k not in _RESERVED and not k.startswith("thimble_")}
    )
    return {k: (REDACTED if _SECRET_KEY.search(k) else v) for k, v in fields.items()}


class _ContextFilter(logging.Filter):
    def __init__(self, static: Mapping[str, Any]) -> None:
        super().__init__()
        self._static = dict(static)

    def filter(self, record: logging.LogRecord) -> bool:
        record.thimble_static = self._static
        record.thimble_context = _context.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, package, version, context, error."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_fields(record))
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        line = orjson.dumps(entry, default=str).decode().translate(_JSON_ESCAPES)
        return redact(line)


class ConsoleFormatter(logging.Formatter):
    """``12:00:01 INFO  logger: message  key=value ...`` for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        fields.pop("package", None)
        fields.pop("version", None)
        extras = "  ".join(f"{k}={v}" for k, v in fields.items())
        time = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        line = f"{time} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if extras:
            line += f"  {extras}"
        line = escape_controls(line)
        if record.exc_info:
            trace = escape_controls(self.formatException(record.exc_info), keep_newlines=True)
            line += "".join(f"\n  {text}" for text in trace.splitlines())  # indented: never a log line
        return redact(line)


def configure_logging(
    package: str,
    version: str,
    level: str = "INFO",
    format: Literal["auto", "json", "console"] = "auto",
    stream: Any = None,
) -> None:
    """Configure the root logger of this process for ``package`` (idempotent: replaces handlers)."""
    stream = stream or sys.stderr
    use_json = format == "json" or (format == "auto" and not getattr(stream, "isatty", lambda: False)())
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if use_json else ConsoleFormatter())
    handler.addFilter(_ContextFilter({"package": package, "version": version}))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("py4j", "urllib3", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get_logger(name: str) -> logging.Logger:
    """A standard logger; use ``extra={...}`` or :func:`bind_context` for structured fields."""
    return logging.getLogger(name)
