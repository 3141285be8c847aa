"""The registry on a real remote filesystem: a WebDAV server (wsgidav) on loopback, reached with webdav4."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import httpx
import joblib
import pytest
from fsspec.implementations.local import LocalFileSystem
from modelops_testmodels import churn, churn_sample, save_churn, scorer
from typer.testing import CliRunner

from thimble.modelops import Registry
from thimble.modelops.cli import app
from thimble.modelops.config import load_modelops_settings
from thimble.modelops.errors import ModelNotFoundError, ModelOpsError
from thimble.modelops.server import create_app
from thimble.testing import ServerProcess, free_port

pytestmark = pytest.mark.integration

USER, PASSWORD = "modelops", "s3cret-dav"


@dataclass(frozen=True)
class DavServer:
    base_url: str
    root: Path  # the folder the server shares

    def options(self, **extra: Any) -> dict[str, Any]:
        # As a config file or environment variable gives them: auth is a list.
        return {"base_url": self.base_url, "auth": [USER, PASSWORD], **extra}


@pytest.fixture(scope="module")
def dav(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DavServer]:
    """A wsgidav server process with basic auth on a free loopback port, for this module."""
    home = tmp_path_factory.mktemp("webdav")
    share = home / "share"
    share.mkdir()
    port = free_port()
    config = {
        "host": "127.0.0.1",
        "port": port,
        "provider_mapping": {"/": str(share)},
        "simple_dc": {"user_mapping": {"*": {USER: {"password": PASSWORD}}}},
        "http_authenticator": {"accept_basic": True, "accept_digest": False, "default_to_digest": False},
        "dir_browser": {"enable": False},
        "verbose": 1,
    }
    (home / "wsgidav.json").write_text(json.dumps(config))
    base_url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return httpx.request("OPTIONS", f"{base_url}/", timeout=1).status_code < 500
        except httpx.TransportError:
            return False

    command = [sys.executable, "-m", "wsgidav.server.server_cli", "--config", home / "wsgidav.json"]
    with ServerProcess(command, ready=answers, log=home / "server.log", timeout=30):
        yield DavServer(base_url, share)


@pytest.fixture(autouse=True)
def _tracking_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A remote registry keeps its metrics store in the run folder: keep the tests' one private.
    monkeypatch.setenv("THIMBLE_MODELOPS__TRACKING", str(tmp_path / "tracking.sqlite"))


@pytest.fixture
def restore_logging() -> Iterator[None]:
    # The CLI configures the root logger onto CliRunner's stream, which is closed once it returns.
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def folder() -> str:
    return f"models-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def remote(dav: DavServer, folder: str) -> Registry:
    return Registry(f"webdav://{folder}", dav.options())


def other_process(dav: DavServer, folder: str) -> Registry:
    """A registry with its own filesystem client and no state shared with the others, as in another process."""
    return Registry(f"webdav://{folder}", dav.options(skip_instance_cache=True))


def test_save_load_predict_over_webdav(
    remote: Registry, dav: DavServer, folder: str, churn_clf: object
) -> None:
    info = save_churn(remote, churn_clf)
    assert info.version == 1
    on_server = dav.root / folder / "churn" / "versions" / "1"
    assert sorted(p.relative_to(on_server).as_posix() for p in on_server.rglob("*") if p.is_file()) == [
        "artifacts/clf.joblib",
        "envelope.json",
        "function.pkl",
        "sample.json",
    ]
    assert json.loads((dav.root / folder / "churn" / "aliases" / "prod.json").read_bytes())["version"] == 1

    reader = other_process(dav, folder)
    assert [(m.name, m.versions, m.aliases) for m in reader.models()] == [("churn", [1], {"prod": 1})]
    shown = reader.info("churn@prod")
    assert shown.context.metrics == {"auc": 0.81}
    assert str(shown.context.training_data) == "warehouse.client_features@v12"
    assert len(reader.sample("churn@1")) == 300
    rows = churn_sample(5, seed=3)
    loaded = reader.load("churn@prod")
    assert loaded.predict(rows) == churn.bind({"clf": churn_clf}).predict(rows)


def test_new_versions_and_moved_aliases_are_seen_at_once_elsewhere(
    remote: Registry, dav: DavServer, folder: str, numbers_clf: object
) -> None:
    remote.save(scorer, artifacts={"clf": numbers_clf}, aliases=["prod"])
    reader = other_process(dav, folder)
    assert reader.resolve("scorer@prod") == ("scorer", 1)
    remote.save(scorer, artifacts={"clf": numbers_clf})
    assert reader.resolve("scorer") == ("scorer", 2)
    assert reader.resolve("scorer@prod") == ("scorer", 1)
    remote.set_alias("scorer", "prod", 2)
    assert reader.resolve("scorer@prod") == ("scorer", 2)
    remote.delete_alias("scorer", "prod")
    with pytest.raises(ModelNotFoundError, match="no alias 'prod'"):
        reader.resolve("scorer@prod")


def test_saves_never_overwrite_and_concurrent_saves_get_their_own_versions(
    remote: Registry, dav: DavServer, folder: str, numbers_clf: object
) -> None:
    first = remote.save(scorer, artifacts={"clf": numbers_clf}, metrics={"writer": -1.0})
    envelope = dav.root / folder / "scorer" / "versions" / "1" / "envelope.json"
    before = envelope.read_bytes()
    writers = 6
    barrier = threading.Barrier(writers)
    saved: dict[int, int] = {}
    failures: list[BaseException] = []

    def save(writer: int) -> None:
        registry = other_process(dav, folder)
        barrier.wait()
        try:
            saved[writer] = registry.save(
                scorer, artifacts={"clf": numbers_clf}, metrics={"writer": float(writer)}
            ).version
        except BaseException as exc:  # reported below, with the others
            failures.append(exc)

    threads = [threading.Thread(target=save, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert failures == []
    assert first.version == 1
    assert sorted(saved.values()) == list(range(2, writers + 2))
    assert envelope.read_bytes() == before
    reader = other_process(dav, folder)
    assert reader.versions("scorer") == list(range(1, writers + 2))
    for writer, version in saved.items():
        assert reader.info(f"scorer@{version}").context.metrics == {"writer": float(writer)}


def test_the_configured_registry_opens_with_its_storage_options(
    remote: Registry, dav: DavServer, folder: str, numbers_clf: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote.save(scorer, artifacts={"clf": numbers_clf})
    monkeypatch.setenv("THIMBLE_MODELOPS__REGISTRY", f"webdav://{folder}")
    monkeypatch.setenv("THIMBLE_MODELOPS__REGISTRY_OPTIONS", json.dumps(dav.options()))
    assert Registry.open().names() == ["scorer"]
    assert Registry.from_config(load_modelops_settings().modelops).versions("scorer") == [1]


def test_unknown_models_aliases_and_versions_say_what_exists(remote: Registry, numbers_clf: object) -> None:
    with pytest.raises(ModelNotFoundError, match="registry is empty"):
        remote.load("scorer")
    remote.save(scorer, artifacts={"clf": numbers_clf}, aliases=["prod"])
    with pytest.raises(ModelNotFoundError, match=r"no model 'scorr'.*did you mean 'scorer'"):
        remote.load("scorr")
    with pytest.raises(ModelNotFoundError, match="no alias 'canary'; aliases: prod -> 1"):
        remote.load("scorer@canary")
    with pytest.raises(ModelNotFoundError, match="no version 4; versions: 1"):
        remote.info("scorer@4")
    with pytest.raises(ModelNotFoundError, match="no alias 'canary'"):
        remote.delete_alias("scorer", "canary")


def test_bad_storage_options_and_servers_are_clear_errors(dav: DavServer, folder: str) -> None:
    with pytest.raises(ModelOpsError, match=r"registry webdav://x: cannot open it.*registry_options"):
        Registry("webdav://x")
    wrong = Registry(f"webdav://{folder}", {"base_url": dav.base_url, "auth": [USER, "wrong"]})
    with pytest.raises(ModelOpsError, match=rf"registry webdav://{folder}: cannot list .*401"):
        wrong.models()  # not "the registry is empty"
    with pytest.raises(ModelOpsError, match=r"cannot list .*Connect"):
        Registry("webdav://x", {"base_url": f"http://127.0.0.1:{free_port()}", "retry": False}).names()


def test_cli_lists_and_shows_the_remote_registry(
    remote: Registry,
    dav: DavServer,
    folder: str,
    churn_clf: object,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    restore_logging: None,
) -> None:
    remote.save(
        churn, artifacts={"clf": churn_clf}, sample=churn_sample(20), aliases=["prod"], pickle_function=True
    )
    url = f"webdav://{folder}"
    monkeypatch.setenv("THIMBLE_MODELOPS__REGISTRY_OPTIONS", json.dumps(dav.options()))
    runner = CliRunner()
    listed = runner.invoke(app, ["list", "--registry", url], catch_exceptions=False)
    assert listed.exit_code == 0, listed.output
    assert "churn" in listed.output
    assert "prod -> 1" in listed.output
    # another process, with the storage options in its config file
    (tmp_path / "thimble.yaml").write_text(
        json.dumps({"modelops": {"registry": url, "registry_options": dav.options()}})
    )
    env = {k: v for k, v in os.environ.items() if k != "THIMBLE_MODELOPS__REGISTRY_OPTIONS"}
    shown = subprocess.run(
        [
            str(Path(sys.executable).parent / "thimble-modelops"),
            "show",
            "churn@prod",
            "--config",
            "thimble.yaml",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    assert "sample: 20 rows" in shown.stdout
    monkeypatch.delenv("THIMBLE_MODELOPS__REGISTRY_OPTIONS")
    bad = runner.invoke(app, ["list", "--registry", url])
    assert bad.exit_code != 0
    assert "registry_options" in bad.output
    assert "Traceback" not in bad.output


def test_serves_models_from_the_remote_registry(
    remote: Registry, dav: DavServer, folder: str, numbers_clf: object, live: Callable[..., Any]
) -> None:
    remote.save(scorer, artifacts={"clf": numbers_clf}, aliases=["prod"])
    url = f"webdav://{folder}"
    settings = load_modelops_settings(
        overrides={"modelops": {"registry": url, "registry_options": dav.options()}}
    )
    server = live(create_app(settings=settings, refs=["scorer@prod"], registry=other_process(dav, folder)))
    rows = [
        {"id": 1, "f0": 0.5, "f1": -1.0, "f2": 2.0, "f3": 0.1},
        {"id": 2, "f0": -2, "f1": 0, "f2": 0, "f3": 0},
    ]
    expected = remote.load("scorer@1").predict(rows)
    with httpx.Client(base_url=server.url) as http:
        answer = http.post("/v1/models/scorer@prod/predict", json=rows)
    assert answer.status_code == 200, answer.text
    assert answer.json()["version"] == 1
    assert answer.json()["predictions"] == expected


class FolderlessFileSystem(LocalFileSystem):
    """Local files seen as an object store sees keys: folders are not made, they exist once a file does."""

    protocol = ("folderless",)

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        if "w" in mode or "x" in mode:
            os.makedirs(self._parent(path), exist_ok=True)
        return super()._open(path, mode, **kwargs)

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        pass

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        pass


def test_without_folders_a_version_is_claimed_by_an_exclusive_create(
    tmp_path: Path, numbers_clf: object
) -> None:
    fsspec.register_implementation("folderless", FolderlessFileSystem, clobber=True)
    url = f"folderless://{tmp_path}/models"
    writers = 6
    barrier = threading.Barrier(writers)
    saved: list[int] = []
    failures: list[BaseException] = []

    def save() -> None:
        registry = Registry(url, {"skip_instance_cache": True})
        barrier.wait()
        try:
            saved.append(registry.save(scorer, artifacts={"clf": numbers_clf}).version)
        except BaseException as exc:  # reported below, with the others
            failures.append(exc)

    threads = [threading.Thread(target=save) for _ in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert failures == []
    assert sorted(saved) == list(range(1, writers + 1))
    assert (tmp_path / "models" / "scorer" / "versions" / "3" / "_claim").exists()
    assert Registry(url).versions("scorer") == list(range(1, writers + 1))


def test_processes_saving_at_once_through_the_cli_get_their_own_versions(
    dav: DavServer, folder: str, numbers_clf: object, tmp_path: Path
) -> None:
    joblib.dump(numbers_clf, tmp_path / "clf.joblib")
    url = f"webdav://{folder}"
    env = os.environ | {
        "THIMBLE_MODELOPS__REGISTRY_OPTIONS": json.dumps(dav.options()),
        "PYTHONPATH": str(Path(__file__).parent),
    }
    command = [
        str(Path(sys.executable).parent / "thimble-modelops"),
        "save",
        "modelops_testmodels:scorer",
        "--artifact",
        f"clf={tmp_path / 'clf.joblib'}",
        "--registry",
        url,
    ]
    procs = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert sorted(out.split("saved scorer@")[1].split()[0] for out, _ in outputs) == ["1", "2"]
    assert Registry(url, dav.options()).versions("scorer") == [1, 2]
