"""Names in Spark SQL: every column or table name put into SQL text, a DDL string or ``F.col`` is quoted here.

A name comes from the user's config or from their data (a JSON key, a Parquet field), so it may hold a
backtick, a dot or a space. ``F.col("a.b")`` reads a struct field and ``F.col("a`b")`` does not parse;
a name spelled into SQL unquoted (``ALTER TABLE ... ADD COLUMNS``) is SQL the data wrote.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import Column


def quote(name: str) -> str:
    """A column name (or one part of a table name) as a SQL identifier: in backticks, backticks doubled."""
    return "`" + name.replace("`", "``") + "`"


def quote_table(table: str) -> str:
    """``database.name`` as a SQL identifier, each part quoted."""
    return ".".join(quote(part) for part in table.split("."))


def col(name: str) -> Column:
    """The column named exactly ``name`` (never a struct field, never parsed)."""
    from pyspark.sql import functions as F

    return F.col(quote(name))


def ddl(columns: Iterable[tuple[str, str]]) -> str:
    """``name type, ...`` (a schema as DDL) with each name quoted; types are Spark SQL type names."""
    return ", ".join(f"{quote(name)} {kind}" for name, kind in columns)
