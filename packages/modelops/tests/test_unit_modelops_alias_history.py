"""Alias moves are recorded with who and when, append-only; a rollback is one command."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import typer
from click.testing import CliRunner
from modelops_testmodels import churn

from thimble.modelops import ModelOpsError, Registry
from thimble.modelops._environment import current_user
from thimble.modelops.cli import app

pytestmark = pytest.mark.unit
runner = CliRunner()
command = typer.main.get_command(app)


@pytest.fixture
def three(saved_churn: Registry, churn_clf: object) -> Registry:
    """churn@1, @2, @3 with prod -> 1 (set by the first save)."""
    for _ in range(2):
        saved_churn.save(churn, artifacts={"clf": churn_clf}, pickle_function=True)
    return saved_churn


def test_every_move_is_recorded_with_who_and_when(three: Registry) -> None:
    three.set_alias("churn", "prod", 2)
    three.set_alias("churn", "staging", 3)
    three.delete_alias("churn", "staging")
    moves = three.alias_history("churn")
    assert [(m.alias, m.action, m.previous, m.version) for m in moves] == [
        ("prod", "move", None, 1),
        ("prod", "move", 1, 2),
        ("staging", "move", None, 3),
        ("staging", "delete", 3, None),
    ]
    assert {m.user for m in moves} == {current_user()}
    assert all(m.at and m.host for m in moves)
    assert [m.version for m in three.alias_history("churn", "prod")] == [1, 2]


def test_rollback_returns_to_the_version_before_the_last_move(three: Registry) -> None:
    three.set_alias("churn", "prod", 2)
    three.set_alias("churn", "prod", 3)
    assert three.rollback("churn", "prod") == 2
    assert three.aliases("churn")["prod"] == 2
    assert three.alias_history("churn", "prod")[-1].action == "rollback"
    assert three.rollback("churn", "prod") == 3  # undoing the rollback, like any other move


def test_rollback_without_an_earlier_version_is_a_clear_error(three: Registry) -> None:
    with pytest.raises(ModelOpsError, match=r"churn@prod -> 1 has no earlier version in its history"):
        three.rollback("churn", "prod")
    with pytest.raises(ModelOpsError, match="churn has no alias 'canary' to roll back"):
        three.rollback("churn", "canary")


def test_concurrent_moves_lose_no_history_entry(three: Registry) -> None:
    moves_per_writer, writers = 10, 8

    def writer(i: int) -> None:
        registry = Registry(three.url)  # each writer its own registry, as separate processes have
        for j in range(moves_per_writer):
            registry.set_alias("churn", "prod", 1 + (i + j) % 3)

    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(writer, range(writers)))
    history = three.alias_history("churn", "prod")
    assert len(history) == 1 + writers * moves_per_writer
    assert three.aliases("churn")["prod"] in {1, 2, 3}


def test_history_files_are_never_rewritten(three: Registry) -> None:
    folder = Path(three.root) / "churn/alias-history"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    three.set_alias("churn", "prod", 3)
    after = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert {k: after[k] for k in before} == before
    assert len(after) == len(before) + 1


def test_alias_rollback_and_history_commands(three: Registry) -> None:
    def cli(*args: str) -> str:
        result = runner.invoke(command, [*args, "--registry", three.url])
        assert result.exit_code == 0, result.output
        return " ".join(result.output.split())

    assert cli("alias", "churn", "prod", "3").endswith("churn@prod -> 3")
    assert cli("alias", "churn", "prod", "--rollback").endswith("churn@prod -> 1 (rolled back)")
    history = cli("alias-history", "churn", "--alias", "prod")
    assert history.count(f"{current_user()}@") == 3
    assert "rollback" in history
    refused = runner.invoke(command, ["alias", "churn", "prod", "2", "--rollback", "--registry", three.url])
    assert refused.exit_code == 2
    assert "--rollback takes no version" in refused.output
