"""Errors thimble-etl reports to its users (every one derives from :class:`ThimbleError`)."""

from __future__ import annotations

from thimble.common.errors import ConfigError, ServiceUnavailableError, ThimbleError

__all__ = [
    "ConfigError",
    "EtlError",
    "SchemaMismatchError",
    "ServiceUnavailableError",
    "SourceError",
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
