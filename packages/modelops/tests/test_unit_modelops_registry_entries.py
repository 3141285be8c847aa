"""A broken registry entry is named where it is: listing goes on, single-entry commands say one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import typer
from click.testing import CliRunner
from modelops_testmodels import churn, scorer

from thimble.modelops import ModelNotFoundError, ModelOpsError, Registry
from thimble.modelops.cli import app

pytestmark = pytest.mark.unit
runner = CliRunner()
command = typer.main.get_command(app)


def _cli(registry: Registry, *args: str) -> tuple[int, str]:
    result = runner.invoke(command, [*args, "--registry", registry.url])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, " ".join(result.output.split())


@pytest.fixture
def broken(saved_churn: Registry, numbers_clf: object) -> Registry:
    """churn (prod -> 1, plus a garbage alias and one pointing at a missing version) and scorer (truncated)."""
    saved_churn.save(scorer, artifacts={"clf": numbers_clf})
    saved_churn.save(scorer, artifacts={"clf": numbers_clf})
    root = Path(saved_churn.root)
    (root / "churn/aliases/garbage.json").write_bytes(b"\x00not json{")
    (root / "churn/aliases/gone.json").write_text('{"version": 7}')
    envelope = root / "scorer/versions/2/envelope.json"
    envelope.write_bytes(envelope.read_bytes()[:100])
    return saved_churn


def test_an_alias_at_a_missing_version_is_a_clear_error(broken: Registry) -> None:
    with pytest.raises(ModelNotFoundError, match=r"churn@gone points at version 7, which does not exist"):
        broken.resolve("churn@gone")
    for args in (["show", "churn@gone"], ["prediction-table", "churn@gone", "--topic", "p"]):
        code, output = _cli(broken, *args)
        assert code == 2
        assert "churn@gone points at version 7, which does not exist; versions: 1" in output


def test_a_garbage_alias_file_is_a_clear_error_for_that_alias_only(broken: Registry) -> None:
    code, output = _cli(broken, "show", "churn@garbage")
    assert code == 2
    assert "alias churn@garbage: its file" in output
    assert "is unreadable" in output
    code, output = _cli(broken, "show", "churn@prod")
    assert code == 0
    assert "churn@1 aliases: prod" in output
    assert "broken: alias churn@garbage" in output


def test_a_truncated_envelope_is_a_clear_error_for_that_version_only(broken: Registry) -> None:
    with pytest.raises(
        ModelOpsError, match=r"model scorer@2: its envelope .* is unreadable \(.*Invalid JSON"
    ):
        broken.load("scorer")
    assert broken.load("scorer@1").version == 1
    code, output = _cli(broken, "show", "scorer@2")
    assert code == 2
    assert "model scorer@2: its envelope" in output


def test_list_shows_broken_entries_and_goes_on(broken: Registry) -> None:
    summaries = {m.name: m for m in broken.models()}
    assert summaries["churn"].aliases == {"prod": 1}
    assert len(summaries["churn"].problems) == 2
    code, output = _cli(broken, "list")
    assert code == 0
    assert "churn" in output
    assert "scorer" in output
    assert "broken: alias churn@garbage" in output
    assert "broken: alias churn@gone points at version 7, which does not exist" in output
    assert "broken: model scorer@2: its envelope" in output


def test_an_alias_symlink_out_of_the_registry_is_refused_for_that_alias_only(
    broken: Registry, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.json"
    outside.write_text('{"version": 1}')
    (Path(broken.root) / "churn/aliases/evil.json").symlink_to(outside)
    with pytest.raises(ModelOpsError, match=r"alias churn@evil: '.*' is outside the registry"):
        broken.resolve("churn@evil")
    assert broken.resolve("churn@prod") == ("churn", 1)
    assert {m.name: m.aliases for m in broken.models()} == {"churn": {"prod": 1}, "scorer": {}}
    code, output = _cli(broken, "list")
    assert code == 0
    assert "scorer" in output
    assert "prod -> 1" in output
    assert "broken: alias churn@evil: " in output
    assert "broken: alias churn@garbage" in output
    code, output = _cli(broken, "show", "churn@1")
    assert code == 0
    assert "churn@1 aliases: prod" in output
    assert "broken: alias churn@evil: " in output
    code, output = _cli(broken, "show", "churn@evil")
    assert code == 2
    assert output.startswith("error: alias churn@evil: ")
    code, output = _cli(broken, "alias", "churn", "evil", "1")  # never written through the symlink
    assert code == 2
    assert "is outside the registry" in output
    assert outside.read_text() == '{"version": 1}'


def test_an_aliases_folder_linked_out_of_the_registry_is_refused_and_the_versions_stay_usable(
    saved_churn: Registry, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "evil.json").write_text('{"version": 1}')
    folder = Path(saved_churn.root) / "churn/aliases"
    shutil.rmtree(folder)
    folder.symlink_to(outside, target_is_directory=True)
    problem = f"aliases of churn: the folder {folder} leads outside the registry; its aliases are not read"
    [summary] = saved_churn.models()
    assert (summary.name, summary.versions, summary.aliases, summary.problems) == (
        "churn",
        [1],
        {},
        [problem],
    )
    assert saved_churn.resolve("churn") == ("churn", 1)
    assert saved_churn.load("churn").version == 1
    with pytest.raises(ModelOpsError, match=r"alias churn@evil: '.*' is outside the registry"):
        saved_churn.resolve("churn@evil")
    with pytest.raises(ModelOpsError, match=r"^aliases of churn: the folder .* leads outside the registry"):
        saved_churn.aliases("churn")
    for args in (["list"], ["show", "churn@1"]):
        code, output = _cli(saved_churn, *args)
        assert code == 0, output
        assert "churn" in output
        assert "broken: aliases of churn: the folder" in output
    code, output = _cli(saved_churn, "show", "churn@evil")
    assert code == 2
    assert output.startswith("error: alias churn@evil: ")
    code, output = _cli(saved_churn, "alias", "churn", "evil", "1")  # never written through the link
    assert code == 2
    assert "is outside the registry" in output
    assert sorted(p.name for p in outside.iterdir()) == ["evil.json"]
    assert (outside / "evil.json").read_text() == '{"version": 1}'


def test_a_version_folder_linked_out_of_the_registry_is_broken_and_the_others_serve(
    saved_churn: Registry, tmp_path: Path
) -> None:
    root = Path(saved_churn.root)
    outside = tmp_path / "outside"
    shutil.copytree(root / "churn/versions/1", outside)  # a whole version, envelope included
    (root / "churn/versions/2").symlink_to(outside, target_is_directory=True)
    problem = (
        f"version churn@2: the folder {root}/churn/versions/2 leads outside the registry; it is not read"
    )
    [summary] = saved_churn.models()
    assert (summary.versions, summary.problems) == ([1], [problem])
    assert saved_churn.resolve("churn") == ("churn", 1)
    for args in (["list"], ["show", "churn"]):
        code, output = _cli(saved_churn, *args)
        assert code == 0, output
        assert f"broken: {problem}" in output
    code, output = _cli(saved_churn, "show", "churn@2")
    assert (code, output) == (2, "error: churn has no version 2; versions: 1")
    (root / "other").mkdir()
    (root / "other/versions").symlink_to(outside.parent, target_is_directory=True)  # all its versions
    code, output = _cli(saved_churn, "list")
    assert code == 0, output
    assert "churn" in output
    assert f"broken: model other: the folder {root}/other/versions leads outside the registry" in output


def test_a_model_folder_linked_out_of_the_registry_is_broken_and_the_others_serve(
    saved_churn: Registry, tmp_path: Path
) -> None:
    root = Path(saved_churn.root)
    outside = tmp_path / "outside"
    shutil.copytree(root / "churn", outside)  # a whole model, versions and aliases included
    (root / "evil").symlink_to(outside, target_is_directory=True)
    problem = f"model evil: the folder {root}/evil leads outside the registry; it is not read"
    assert {(m.name, tuple(m.versions), tuple(m.problems)) for m in saved_churn.models()} == {
        ("churn", (1,), ()),
        ("evil", (), (problem,)),
    }
    with pytest.raises(ModelOpsError, match=f"^{problem}$"):
        saved_churn.resolve("evil")
    assert saved_churn.load("churn@prod").version == 1
    code, output = _cli(saved_churn, "list")
    assert code == 0, output
    assert "churn" in output
    assert f"broken: {problem}" in output
    for args in (["show", "evil"], ["alias", "evil", "prod", "1"]):  # never read nor written through it
        code, output = _cli(saved_churn, *args)
        assert (code, output) == (2, f"error: {problem}")
    assert sorted(p.name for p in (outside / "aliases").iterdir()) == ["prod.json"]


def test_an_alias_file_with_a_wrong_version_type_is_broken(saved_churn: Registry) -> None:
    path = Path(saved_churn.root) / "churn/aliases/odd.json"
    for content in ('{"version": true}', '{"version": "1"}', '{"version": -3}', "[1]"):
        path.write_text(content)
        with pytest.raises(ModelOpsError, match=r"alias churn@odd: its file .* is unreadable"):
            saved_churn.resolve("churn@odd")


def test_stray_files_in_the_registry_are_not_models_or_aliases(saved_churn: Registry) -> None:
    root = Path(saved_churn.root)
    (root / "Not A Model").mkdir()
    (root / "churn/aliases/README").write_text("hello")
    (root / "churn/aliases/Bad Name.json").write_text('{"version": 1}')
    (root / "churn/versions/notes").mkdir()
    assert saved_churn.names() == ["churn"]
    assert saved_churn.aliases("churn") == {"prod": 1}
    assert saved_churn.versions("churn") == [1]


def test_save_checks_its_aliases_before_writing_anything(registry: Registry, churn_clf: object) -> None:
    with pytest.raises(ModelOpsError, match=r"alias '\.\./x'"):
        registry.save(churn, artifacts={"clf": churn_clf}, aliases=["../x"])
    assert registry.models() == []
