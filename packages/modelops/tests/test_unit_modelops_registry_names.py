"""Hostile model, alias and version names never reach a file outside the registry.

Every file the process opens, lists, creates, renames or deletes is seen through Python's audit hooks;
beside the registry lies a complete model (``victim``) that a name escaping the root would find.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import typer
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from modelops_testmodels import save_churn, scorer

from thimble.common.errors import ThimbleError
from thimble.modelops import ModelOpsError, ModelRef, Registry
from thimble.modelops.cli import app

pytestmark = pytest.mark.unit
runner = CliRunner()
command = typer.main.get_command(app)  # built once: typer rebuilds it on every invoke otherwise

_touched: list[str] | None = None  # paths seen by the audit hook while a test records
_EVENTS = {"open", "os.listdir", "os.scandir", "os.mkdir", "os.remove", "os.rename", "os.rmdir"}


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _touched is None or event not in _EVENTS:
        return
    paths = args[:2] if event == "os.rename" else args[:1]
    for path in paths:
        if isinstance(path, str | bytes | os.PathLike):
            _touched.append(os.path.realpath(os.fsdecode(path)))


sys.addaudithook(_audit)


class Sandbox:
    """``base/registry`` (model churn, alias prod) beside ``base/victim`` (a copy of it) and other bait."""

    def __init__(self, base: Path, clf: object) -> None:
        self.base = Path(os.path.realpath(base))
        self.root = self.base / "registry"
        self.registry = Registry(str(self.root))
        save_churn(self.registry, clf)
        shutil.copytree(self.root / "churn", self.base / "victim")
        shutil.copytree(self.root / "churn", self.base / "registry-evil" / "churn")
        (self.base / "secret.json").write_text('{"version": 1}')
        self.before = self.outside()

    def outside(self) -> dict[str, str]:
        """Every file beside the registry, with its content hash."""
        files = {}
        for folder, subfolders, names in os.walk(self.base):
            if folder == str(self.base):
                subfolders.remove("registry")
            for name in names:
                path = Path(folder, name)
                files[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        return files

    def check(self, action: Callable[[], Any]) -> None:
        """Run ``action``; nothing outside the registry may be touched, and errors must be user errors."""
        global _touched
        if not (self.root / "churn" / "aliases" / "prod.json").exists():
            self.registry.set_alias("churn", "prod", 1)
        _touched = []
        try:
            action()
        except ThimbleError:
            pass
        finally:
            touched, _touched = _touched, None
        root = str(self.root)
        escaped = [
            p for p in touched if p.startswith(str(self.base)) and not (p == root or p.startswith(root + "/"))
        ]
        assert escaped == []
        assert self.outside() == self.before


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory, churn_clf: object) -> Sandbox:
    return Sandbox(tmp_path_factory.mktemp("names"), churn_clf)


BAIT = ["victim", "secret.json", "registry-evil/churn", "registry-evil"]
HOSTILE = st.one_of(
    st.sampled_from(
        [
            "..",
            ".",
            "...",
            "../victim",
            "../registry-evil/churn",
            "churn/../../victim",
            "churn/..",
            "{base}/victim",
            "/etc/passwd",
            "..\\victim",
            "churn\\..\\..\\victim",
            "\uff0e\uff0e\uff0fvictim",
            "\u2025/victim",
            "churn\u2215..\u2215..\u2215victim",
            "\uff43\uff48\uff55\uff52\uff4e",
            "churn\x00",
            "churn\n",
            "\x00../victim",
            "prod\n",
            "c" * 5000,
            "a" * 101,
            "9" * 5000,
            "²",
            "\u0661",
            "0",
            "-1",
            "v0",
            "~",
            "%2e%2e%2fvictim",
            "churn@prod@x",
            "CHURN",
            " churn/.. ",
        ]
    ),
    st.builds(lambda n, bait: "../" * n + bait, st.integers(1, 5), st.sampled_from(BAIT)),
    st.lists(
        st.sampled_from([*"./\\\x00churnv1@ \uff0e\uff0f\u2025\u2215~-_", "victim", "..", "../"]), max_size=8
    ).map("".join),
)
RESOLVABLE = {"churn", "churn@prod", "churn@1", "churn@v1", "churn@latest", "prod", "1", "v1", "latest"}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hostile=HOSTILE)
def test_no_registry_method_reaches_outside_the_root(sandbox: Sandbox, hostile: str) -> None:
    name = hostile.replace("{base}", str(sandbox.base))
    reg = sandbox.registry
    calls: list[Callable[[], Any]] = [
        lambda: reg.resolve(name),
        lambda: reg.resolve(f"churn@{name}"),
        lambda: reg.info(name),
        lambda: reg.load(name),
        lambda: reg.load(f"{name}@prod"),
        lambda: reg.sample(name),
        lambda: reg.versions(name),
        lambda: reg.aliases(name),
        lambda: reg.set_alias(name, "prod", 1),
        lambda: reg.set_alias("churn", name, 1),
        lambda: reg.set_alias("churn", "staging", name),
        lambda: reg.delete_alias(name, "prod"),
        lambda: reg.delete_alias("churn", name),
        lambda: reg.save(scorer, aliases=[name]),
    ]
    if hasattr(reg, "alias_history"):
        calls += [
            lambda: reg.alias_history(name),
            lambda: reg.alias_history("churn", name),
            lambda: reg.rollback(name, "prod"),
            lambda: reg.rollback("churn", name),
        ]
    for call in calls:
        sandbox.check(call)


def _commands(ref: str, name: str) -> list[list[str]]:
    return [
        ["show", ref],
        ["alias", name, "prod", "1"],
        ["alias", "churn", name, "1"],
        ["alias", "churn", "staging", name],
        ["alias", name, "prod", "--delete"],
        ["alias", "churn", name, "--delete"],
        ["alias", "churn", name, "--rollback"],
        ["alias-history", name],
        ["alias-history", "churn", "--alias", name],
        ["prediction-table", ref, "--topic", "predictions"],
        ["serve", ref],
        ["batch", ref, "--input", "t", "--output", "u"],
        ["stream", ref, "--source", "a", "--sink", "b"],
    ]


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hostile=HOSTILE, shape=st.sampled_from(["{}", "churn@{}", "{}@prod"]))
def test_no_command_reaches_outside_the_root(sandbox: Sandbox, hostile: str, shape: str) -> None:
    name = hostile.replace("{base}", str(sandbox.base))
    ref = shape.format(name)
    # A reference that names the registry's model would start a server, a Spark job or a consumer.
    assume(ref.strip() not in RESOLVABLE and name.strip() not in RESOLVABLE)
    for args in _commands(ref, name):
        result: Any = None

        def invoke(args: list[str] = args) -> None:
            nonlocal result
            result = runner.invoke(command, [*args, "--registry", str(sandbox.root)])

        sandbox.check(invoke)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(f"{args}: {result.exception!r}") from result.exception
        assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["alias", "churn", "../../../victim", "--delete"], "alias '../../../victim': use a lowercase word"),
        (["alias", "../victim", "prod", "1"], "model name '../victim': use lowercase letters"),
        (["show", "../victim@prod"], "model name '../victim'"),
        (["show", "churn@../x"], "'../x' after '@': give a version number"),
        (["show", "churn\nx"], "model name 'churn\\nx'"),
        (["alias", "churn", "staging", "../1"], "'../1' after '@'"),
        (["serve", "/etc/passwd"], "model name '/etc/passwd'"),
    ],
)
def test_a_hostile_name_is_one_line_naming_the_argument(
    sandbox: Sandbox, args: list[str], message: str
) -> None:
    result = runner.invoke(command, [*args, "--registry", str(sandbox.root)])
    assert result.exit_code == 2
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert (sandbox.base / "victim" / "aliases" / "prod.json").exists()


def test_envelope_paths_cannot_leave_the_version(sandbox: Sandbox, tmp_path: Path) -> None:
    reg = Registry(str(tmp_path / "models"))
    shutil.copytree(sandbox.root / "churn", tmp_path / "models" / "churn")
    envelope = tmp_path / "models" / "churn" / "versions" / "1" / "envelope.json"
    text = envelope.read_text()
    for field, value in [
        ('"pickle_file": "function.pkl"', '"pickle_file": "../../../../victim/versions/1/function.pkl"'),
        ('"sample_file": "sample.json"', '"sample_file": "../../../../secret.json"'),
        ('"import_path": null', '"import_path": "../../evil:x"'),
    ]:
        envelope.write_text(text.replace(field, value))
        with pytest.raises(ModelOpsError, match=r"envelope .* is unreadable"):
            reg.load("churn@1")
    envelope.write_text(text.replace('"name": "churn"', '"name": "victim"'))
    with pytest.raises(ModelOpsError, match="describes victim@1, not this version"):
        reg.load("churn@1")


def test_a_symlink_out_of_the_registry_is_refused(sandbox: Sandbox, tmp_path: Path) -> None:
    root = tmp_path / "models"
    root.mkdir()
    (root / "churn").symlink_to(sandbox.base / "victim")
    with pytest.raises(ModelOpsError, match="outside the registry"):
        Registry(str(root)).load("churn@prod")


def test_valid_references_still_parse() -> None:
    assert ModelRef.parse("churn@v3").version == 3
    assert ModelRef.parse(" churn ").selector == "latest"
    assert ModelRef.parse("churn@canary-2").version is None


REMOTE_HOSTILE = [
    "../victim",
    "..",
    "churn/../../victim",
    "/victim",
    "//victim",
    "..\\victim",
    "churn\x00",
    "\uff0e\uff0e\uff0fvictim",
    "c" * 300,
]


def test_a_remote_registry_keeps_hostile_names_inside_its_root(tmp_path: Path, churn_clf: object) -> None:
    import uuid

    base = f"/names-{uuid.uuid4().hex[:8]}"
    reg = Registry(f"memory://{base}/registry", tracking=str(tmp_path / "tracking.sqlite"))
    save_churn(reg, churn_clf)
    reg.fs.copy(f"{base}/registry/churn", f"{base}/victim", recursive=True)
    store = reg.fs.store

    def outside() -> dict[str, bytes]:
        return {
            k: store[k].getvalue()
            for k in store
            if k.startswith(base) and not k.startswith(f"{base}/registry/")
        }

    before = outside()
    assert before
    for name in REMOTE_HOSTILE:
        calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = [
            (reg.load, (name,)),
            (reg.load, (f"{name}@prod",)),
            (reg.info, (f"churn@{name}",)),
            (reg.set_alias, (name, "prod", 1)),
            (reg.set_alias, ("churn", name, 1)),
            (reg.delete_alias, (name, "prod")),
            (reg.delete_alias, ("churn", name)),
            (reg.rollback, (name, "prod")),
        ]
        for method, args in calls:
            with pytest.raises(ThimbleError):
                method(*args)
    assert outside() == before
    with pytest.raises(ModelOpsError, match="outside the registry"):
        reg._inside(f"{base}/registry/../victim/aliases/prod.json")
    assert reg.load("churn@prod").version == 1
