"""The results table, for the terminal and for the README."""

from __future__ import annotations

from rich.table import Table

from integration.guarantees._scenario import Result

COLUMNS = (
    "mode",
    "handler",
    "protocol",
    "slow",
    "sent",
    "poison",
    "lost",
    "duplicated",
    "dlq exact",
    "kills",
    "result",
)


def _row(result: Result) -> list[str]:
    s = result.scenario
    return [
        s.mode,
        "list[T]" if s.handler == "batch" else "per message",
        s.protocol,
        "yes" if s.slow else "no",
        f"{result.sent:,}",
        f"{result.poison:,}",
        f"{result.lost:,}",
        f"{result.duplicated:,}",
        "yes" if result.dlq_exact else "NO",
        result.kills_text(),
        "pass" if result.passed else "FAIL",
    ]


def table(results: list[Result]) -> Table:
    view = Table(title="thimble-consumer guarantees on a three-broker cluster", title_justify="left")
    for column in COLUMNS:
        view.add_column(
            column, justify="right" if column in ("sent", "poison", "lost", "duplicated") else "left"
        )
    for result in results:
        view.add_row(*_row(result))
    return view


def markdown(results: list[Result]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(_row(r)) + " |" for r in results]
    return "\n".join(lines)


def problems(results: list[Result]) -> list[str]:
    lines = []
    for result in results:
        notes = list(result.problems)
        if result.crashes:
            notes.append(
                "worker exits not caused by the suite: "
                + ", ".join(f"{k} x{n}" for k, n in result.crashes.items())
            )
        if result.orphans and not any("supervisor" in p for p in notes):
            notes.append(f"{result.orphans} orphaned worker(s)")
        if result.resent:
            notes.append(
                f"note: the input holds {result.resent} record(s) twice (the suite's producer sent them again "
                "after a broker restart); each copy is expected to be handled"
            )
        lines += [f"{result.scenario.name}: {note}" for note in notes]
    return lines
