"""Table names given to a function are checked by the config's rule before any Spark call: a hostile name
is one line naming the function's argument and the value (cut when long), never a Spark parse error."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from thimble.etl import EtlSettings, blocked_runs, changes, history, parse_table_config, table_version
from thimble.etl.errors import ConfigError, EtlError
from thimble.etl.quarantine import quarantine_summary
from thimble.etl.report import write_report
from thimble.etl.runner import write_dataframe

pytestmark = pytest.mark.unit

HOSTILE = [
    "a`b",
    "db.a`b",
    "x` INT, `pwned",
    "a.b.c",
    ".a",
    "a.",
    "a..b",
    "",
    "t" * 129,
    "db." + "t" * 129,
    "x" * 10_000,
    "t\n",
    "t\nDROP TABLE x",
    "t\u202ex",  # right-to-left override
    "t\u2066x\u2069",  # left-to-right isolate
    "tëst",
    " t",
    "t;",
    "1t",
]


class _NoSpark:
    """A session and a DataFrame that fail any use: the name must be refused before Spark is asked."""

    @property
    def sparkSession(self) -> _NoSpark:
        return self

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"Spark was used ({name}) before the table name was checked")


NO_SPARK: Any = _NoSpark()
settings = EtlSettings()

ENTRY_POINTS: dict[str, Callable[[str], object]] = {
    "write_dataframe": lambda t: write_dataframe(NO_SPARK, t, settings=settings),
    "history": lambda t: history(t, spark=NO_SPARK, settings=settings),
    "blocked_runs": lambda t: blocked_runs(t, spark=NO_SPARK, settings=settings),
    "table_version": lambda t: table_version(t, spark=NO_SPARK, settings=settings),
    "changes": lambda t: changes(t, 0, spark=NO_SPARK, settings=settings),
    "quarantine_summary": lambda t: quarantine_summary(t, spark=NO_SPARK, settings=settings),
    "write_report": lambda t: write_report(t, "report.html", spark=NO_SPARK, settings=settings),
}


@pytest.mark.parametrize("function", ENTRY_POINTS)
@pytest.mark.parametrize("name", HOSTILE, ids=lambda n: repr(n[:20]) + f"/{len(n)}")
def test_a_hostile_table_name_is_one_line_naming_the_argument(function: str, name: str) -> None:
    with pytest.raises(EtlError) as info:
        ENTRY_POINTS[function](name)
    message = str(info.value)
    assert "\n" not in message, message
    assert len(message) < 200, message
    shown = repr(name) if len(name) <= 40 else f"{name[:40]!r}... ({len(name)} characters)"
    assert message.startswith(f"{function}(table={shown}): a table is 'name' or 'database.name'"), message


@pytest.mark.parametrize("function", ENTRY_POINTS)
def test_a_table_name_that_is_not_a_string_is_refused(function: str) -> None:
    with pytest.raises(EtlError, match=rf"^{function}\(table=None\): a table is"):
        ENTRY_POINTS[function](None)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", HOSTILE, ids=lambda n: repr(n[:20]) + f"/{len(n)}")
def test_the_config_refuses_the_same_names(name: str) -> None:
    for data in (
        {"table": name, "source": {"type": "table", "table": "s"}},
        {"table": "t", "source": {"type": "table", "table": name}},
    ):
        with pytest.raises(ConfigError, match=r"a table is 'name' or 'database\.name'"):
            parse_table_config(data)


@pytest.mark.parametrize("name", ["t", "_t", "db.t", "T_1", "t" * 128, f"{'d' * 128}.{'t' * 128}"])
def test_valid_names_pass_the_check(name: str) -> None:
    assert parse_table_config({"table": name, "source": {"type": "table", "table": name}}).table == name
    with pytest.raises(AssertionError, match="Spark was used"):
        history(name, spark=NO_SPARK, settings=settings)
