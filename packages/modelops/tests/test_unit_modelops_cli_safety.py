"""The CLI prints what it is given verbatim, reports unreadable input in one line, and never serves an empty token."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
import uvicorn
from click.testing import CliRunner

from thimble.modelops import Registry
from thimble.modelops.cli import AUTH_TOKEN_ENV, app
from thimble.modelops.config import OVERRIDES_ENV
from thimble.modelops.errors import ModelOpsError

pytestmark = pytest.mark.unit
runner = CliRunner()
command = typer.main.get_command(app)

HOSTILE_MODEL = '''
from pydantic import BaseModel

from thimble.modelops import ModelContext, model


class In(BaseModel):
    x: float = 0.0


class Out(BaseModel):
    y: float


@model(name="hostile")
def predict(ctx: ModelContext, rows: list[In]) -> list[Out]:
    """Doc with [/] and [red]red[/red] and :warning: and a trailing backslash \\\\"""
    return [Out(y=r.x) for r in rows]
'''


def _squeezed(text: str) -> str:
    """``text`` without whitespace: rich wraps long values at the terminal's width."""
    return "".join(text.split())


def _cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(command, list(args))
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.output


def _save_hostile(reg: str, *args: str, training_table: str) -> str:
    """Save hostile@1 (``args``: more flags), then make its envelope name ``training_table`` as if written by
    someone else (the CLI takes only a table name of the grammar); the save's output."""
    code, output = _cli(
        "save", "hostile_cli_model:predict", "--training-data", "w.t@v1", *args, "--registry", reg
    )
    assert code == 0, output
    envelope = Path(reg) / "hostile/versions/1/envelope.json"
    info = json.loads(envelope.read_text())
    info["context"]["training_data"]["table"] = training_table
    envelope.write_text(json.dumps(info))
    return output


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder holding a model whose docstring is rich markup; the current folder in the test."""
    (tmp_path / "hostile_cli_model.py").write_text(HOSTILE_MODEL)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(OVERRIDES_ENV, raising=False)  # serve sets it for its workers: restored after the test
    return tmp_path


@pytest.fixture
def no_uvicorn(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """``uvicorn.run`` recorded instead of run: serve and dashboard print their line, then return."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: calls.append(kwargs))
    return calls


def test_every_command_prints_markup_in_values_verbatim(
    project: Path, monkeypatch: pytest.MonkeyPatch, no_uvicorn: list[dict[str, Any]]
) -> None:
    for variable in ("LOGNAME", "USER"):  # what getpass.getuser() reads first
        monkeypatch.setenv(variable, "ev[/]il")
    reg = str(project / "reg[/]istry")
    code, output = _cli("save", "hostile_cli_model:predict", "--training-data", "w[/]t@v1", "--registry", reg)
    assert (code, output.split(": expected")[0]) == (2, "error: --training-data 'w[/]t@v1'")
    output = _save_hostile(reg, "--metric", "[red]auc=0.5", "--alias", "staging", training_table="w[/]t")
    assert _squeezed(f"saved hostile@1 in {reg} (aliases: staging)") in _squeezed(output)
    assert Registry(reg).versions("hostile") == [1]

    code, output = _cli("show", "hostile@staging", "--registry", reg)
    assert code == 0, output
    for shown in (
        "Doc with [/] and [red]red[/red] and :warning: and a trailing backslash \\",
        "by ev[/]il@",
        "training data: w[/]t@v1",
        "metrics: [red]auc=0.5",
    ):
        assert _squeezed(shown) in _squeezed(output), output

    code, output = _cli("list", "--registry", reg)
    assert code == 0, output
    assert "w[/]t@v1" in output
    code, output = _cli("list", "--registry", str(project / "empty[/]one"))
    assert code == 0, output
    assert _squeezed(f"no models in {project / 'empty[/]one'}") in _squeezed(output)

    code, output = _cli("alias", "hostile", "prod", "staging", "--registry", reg)
    assert code == 0, output
    assert output.strip().endswith("\nhostile@prod -> 1")  # after the log line of the move
    code, output = _cli("alias-history", "hostile", "--registry", reg)
    assert code == 0, output
    assert "ev[/]il@" in output

    (project / "out[").mkdir()
    target = project / "out[/]put.yaml"
    code, output = _cli(
        "prediction-table", "hostile@1", "--topic", "p", "--output", str(target), "--registry", reg
    )
    assert code == 0, output
    assert _squeezed(str(target)) in _squeezed(output)

    code, output = _cli("dashboard", "--host", "[/]", "--registry", reg)
    assert code == 0, output
    assert _squeezed("on http://[/]:8090") in _squeezed(output)
    code, output = _cli("serve", "hostile@prod", "--host", "[bold]h[/]", "--registry", reg)
    assert code == 0, output
    assert _squeezed("serving hostile@prod on http://[bold]h[/]:8080") in _squeezed(output)
    assert [call["host"] for call in no_uvicorn] == ["[/]", "[bold]h[/]"]


def test_control_characters_from_a_registry_never_reach_the_terminal(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An envelope or alias history written by someone else: its text is shown, its escapes not acted on."""
    for variable in ("LOGNAME", "USER"):
        monkeypatch.setenv(variable, "ev\x1b]0;owned\x07il")
    reg = str(project / "models")
    _save_hostile(reg, "--alias", "s", training_table="w\x1b[2Jt")
    for args in (["show", "hostile@1"], ["list"], ["alias-history", "hostile"]):
        code, output = _cli(*args, "--registry", reg)
        assert code == 0, output
        assert "\x1b" not in output, (args, output)
        assert "\x07" not in output, (args, output)
        assert "\\x1b" in output, (args, output)
    code, output = _cli("show", "hostile@1", "--registry", reg)
    assert _squeezed("by ev\\x1b]0;owned\\x07il@") in _squeezed(output)
    assert _squeezed("training data: w\\x1b[2Jt@v1") in _squeezed(output)


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        (
            "s.json",
            b"{bad",
            "--sample s.json: cannot read it as JSON (JSONDecodeError: Expecting property name",
        ),
        ("s.json", b"\xff\xfe", "--sample s.json: cannot read it as JSON (UnicodeDecodeError: "),
        (
            "s.csv",
            b'a,b\n1,2,3,4\n"x\n',
            "--sample s.csv: cannot read it as CSV (ParserError: Error tokenizing data.",
        ),
        ("s.parquet", b"nope\n", "--sample s.parquet: cannot read it as Parquet (ArrowInvalid: "),
        ("folder", None, "--sample folder: is a folder; give a .json, .csv or .parquet file"),
        ("none.json", None, "--sample none.json: the file does not exist"),
    ],
)
def test_an_unreadable_sample_is_one_line_naming_the_flag(
    project: Path, file: str, content: bytes | None, message: str
) -> None:
    if content is not None:
        (project / file).write_bytes(content)
    elif file == "folder":
        (project / file).mkdir()
    reg = str(project / "models")
    code, output = _cli("save", "hostile_cli_model:predict", "--sample", file, "--registry", reg)
    assert code == 2
    assert output.startswith(f"error: {message}"), output
    assert len(output.strip().splitlines()) == 1, output
    assert Registry(reg).models() == []


@pytest.mark.parametrize("given", ["warehouse.t@latest", "a.b.c", "w.t; drop table x", "w\x1b[2Jt@v1"])
def test_training_data_outside_the_grammar_is_one_line_naming_the_flag(project: Path, given: str) -> None:
    reg = str(project / "models")
    code, output = _cli("save", "hostile_cli_model:predict", "--training-data", given, "--registry", reg)
    assert code == 2
    assert output.startswith(
        f"error: --training-data {given!r}: expected 'table' or 'table@v<version>'".replace("\x1b", "\\x1b")
    ), output
    assert len(output.strip().splitlines()) == 1, output
    assert "\x1b" not in output
    assert Registry(reg).models() == []


CLOSED_MODEL = """
from pydantic import BaseModel, ConfigDict

from thimble.modelops import ModelContext, model


class In(BaseModel):
    model_config = ConfigDict(extra="forbid")
    x: float
    tags: dict[str, int] = {}


class Out(BaseModel):
    y: float


@model(name="closed")
def predict(ctx: ModelContext, rows: list[In]) -> list[Out]:
    return [Out(y=r.x) for r in rows]
"""


def test_a_sample_with_a_hostile_field_name_is_one_short_line(project: Path) -> None:
    (project / "closed_cli_model.py").write_text(CLOSED_MODEL)
    hostile = "k\n\x1b[31m\r\x00" + "x" * 100_000
    reg = str(project / "models")
    for rows in ([{"x": 1.0, hostile: 1}], [{"x": 1.0, "tags": {hostile: "z"}}]):
        (project / "s.json").write_text(json.dumps(rows))
        code, output = _cli("save", "closed_cli_model:predict", "--sample", "s.json", "--registry", reg)
        assert code == 2
        assert output.startswith("error: --sample s.json: input does not match In: [0]."), output[:300]
        assert len(output) < 2000
        assert len(output.strip().splitlines()) == 1, output[:300]
        assert "\x1b" not in output
        assert "k\\n\\x1b[31m\\r\\x00xxx" in output
    assert Registry(reg).models() == []


@pytest.mark.parametrize("given", ["", "  "])
def test_an_empty_registry_is_refused_not_taken_for_the_current_folder(
    project: Path, given: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = sorted(p.name for p in project.iterdir())
    for args in (["save", "hostile_cli_model:predict", "--registry", given], ["list", "--registry", given]):
        code, output = _cli(*args)
        assert code == 2, output
        assert output.startswith("error: Invalid configuration"), output
        assert "modelops.registry: give a folder or an fsspec URL (--registry" in output
    monkeypatch.setenv("THIMBLE_MODELOPS__REGISTRY", given)
    code, output = _cli("list")
    assert code == 2
    assert "modelops.registry: give a folder or an fsspec URL" in output
    assert sorted(p.name for p in project.iterdir()) == before
    with pytest.raises(ModelOpsError, match="give a folder or an fsspec URL"):
        Registry(given)


class _FailsToLoad:
    def __reduce__(self) -> tuple[Any, ...]:
        return (getattr, (0, "x" * 100_000))  # AttributeError quoting the whole name


def test_an_error_raised_by_a_users_file_is_cut_in_the_one_line(project: Path) -> None:
    import pickle

    (project / "huge.joblib").write_bytes(pickle.dumps(_FailsToLoad()))
    (project / "huge_on_import.py").write_text(f"raise ModuleNotFoundError({'y' * 100_000!r})\n")
    reg = str(project / "models")
    for args, start in (
        (
            ["hostile_cli_model:predict", "--artifact", "clf=huge.joblib"],
            "error: artifact 'clf': cannot load",
        ),
        (["huge_on_import:predict"], "error: cannot import huge_on_import:predict: yyy"),
    ):
        code, output = _cli("save", *args, "--registry", reg)
        assert code == 2
        assert output.startswith(start), output[:200]
        assert len(output) < 600, output[:200]
        assert "more characters)" in output


def test_a_config_file_that_is_not_text_is_one_error_naming_it(project: Path) -> None:
    (project / "bin.yaml").write_bytes(b"\xff\xfe")
    code, output = _cli("list", "--config", "bin.yaml")
    assert code == 2
    assert output == "error: Invalid configuration in bin.yaml:\n  not UTF-8 text (byte 0xff at position 0)\n"


def test_a_model_module_that_raises_on_import_is_one_line(project: Path) -> None:
    (project / "boom_on_import.py").write_text('raise RuntimeError("no table\\nsecond line")\n')
    code, output = _cli("save", "boom_on_import:predict", "--registry", str(project / "models"))
    assert code == 2
    assert output == (
        "error: cannot import boom_on_import:predict: importing 'boom_on_import' raised RuntimeError: no table\n"
    )


@pytest.mark.parametrize(
    ("flag", "environment", "refused"),
    [
        (["--auth-token", ""], {}, True),
        ([], {AUTH_TOKEN_ENV: ""}, True),  # set but empty: `--auth-token "$UNSET"` or an empty secret
        ([], {"THIMBLE_MODELOPS__SERVER__AUTH_TOKEN": ""}, True),
        (["--auth-token", "fifteen-chars!!"], {}, True),
        (["--auth-token", "sixteen-chars!!!"], {}, False),
    ],
)
def test_serve_refuses_an_empty_or_short_auth_token_and_takes_one_of_16_characters(
    saved_churn: Registry,
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_uvicorn: list[dict[str, Any]],
    flag: list[str],
    environment: dict[str, str],
    refused: bool,
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    code, output = _cli("serve", "churn@prod", *flag, "--registry", saved_churn.url)
    assert (code, len(no_uvicorn)) == ((2, 0) if refused else (0, 1)), output
    said = "modelops.server.auth_token: use a random secret of at least 16 characters"
    assert (said in " ".join(output.split())) is refused, output
    assert "-chars" not in output  # the token itself is never printed
