"""Errors thimble-etl reports to its users (every one derives from :class:`ThimbleError`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from thimble.common.errors import ConfigError, ServiceUnavailableError, SparkFailure, ThimbleError
from thimble.common.validation import format_location

__all__ = [
    "ConfigError",
    "EtlError",
    "SchemaMismatchError",
    "ServiceUnavailableError",
    "SourceError",
    "SparkJobError",
    "TableNotFoundError",
]


class EtlError(ThimbleError):
    """A table could not be loaded; the message says why and what to change."""


class SourceError(EtlError):
    """The source could not be read, or does not have the columns the config names."""


class SchemaMismatchError(EtlError):
    """The data's schema does not fit the table's and the evolution policy forbids the change."""


class TableNotFoundError(EtlError):
    """The named warehouse table does not exist."""


# Delta's conflicts with a transaction that committed to the table while this one ran (its error conditions,
# without their subclasses such as ``.WITHOUT_HINT``): running again reads the table as it now is.
CONCURRENT_CHANGES = frozenset(
    {
        "DELTA_CONCURRENT_APPEND",
        "DELTA_CONCURRENT_DELETE_DELETE",
        "DELTA_CONCURRENT_DELETE_READ",
        "DELTA_CONCURRENT_TRANSACTION",
        "DELTA_CONCURRENT_WRITE",
        "DELTA_METADATA_CHANGED",
        "DELTA_PROTOCOL_CHANGED",
    }
)


def concurrent_change(failure: SparkFailure | None) -> str | None:
    """The condition of ``failure`` when it is one of :data:`CONCURRENT_CHANGES`, else None."""
    condition = ((failure.condition if failure is not None else None) or "").split(".", 1)[0]
    return condition if condition in CONCURRENT_CHANGES else None


class SparkJobError(EtlError):
    """Spark could not run the load; nothing was written. The message is Spark's reason, on one line."""

    def __init__(self, table: str, failure: SparkFailure, where: str | None = None) -> None:
        self.table = table
        self.failure = failure
        self.where = where
        prefix = f"{where}: " if where else ""
        if self.concurrent_change:
            reason = (
                f"another run changed the table at the same time ({self.concurrent_change}), so this run "
                "wrote nothing to it; run it again"
            )
        else:
            reason = f"Spark failed, nothing was written: {failure.reason}"
        super().__init__(f"{prefix}{table}: {reason}")

    @property
    def concurrent_change(self) -> str | None:
        """Delta's condition when another run committed to the table while this one ran (running again
        is the fix), else None."""
        return concurrent_change(self.failure)

    def located(self, file: str | Path, config: BaseModel) -> SparkJobError:
        """The same error naming the config file, and the fields of ``config`` the failure points at."""
        fields = config_fields(config.model_dump(mode="json", by_alias=True), self.failure)
        where = f"{file}: {', '.join(fields)}" if fields else str(file)
        return SparkJobError(self.table, self.failure, where)


_TYPE_ALIASES = {"integer": "int", "long": "bigint", "short": "smallint", "byte": "tinyint"}


def config_fields(data: Any, failure: SparkFailure) -> list[str]:
    """Paths (``cleanse[0].expression``) of the config values the failure quotes or casts to."""
    strings = list(_strings(data, ()))
    quoted = [path for path, value in strings if any(text and text in value for text in failure.quoted)]
    if quoted:
        return [format_location(list(path)) for path in quoted]
    # A cast the user did not write in SQL: the declarations of the type it failed to cast to.
    target = failure.parameters.get("targetType", "").strip('"').lower()
    declared = [
        path
        for path, value in strings
        if target and path[:1] in (("schema",), ("cleanse",)) and _type(value) == target
    ]
    return [format_location(list(path)) for path in declared]


def _type(value: str) -> str:
    text = value.strip().lower()
    return _TYPE_ALIASES.get(text, text)


def _strings(node: Any, path: tuple[int | str, ...]) -> Iterator[tuple[tuple[int | str, ...], str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, (*path, i))
    elif isinstance(node, str):
        yield path, node
