"""With a signing key, saved models are signed and anything that does not verify is refused."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import orjson
import pytest
import typer
from click.testing import CliRunner
from modelops_testmodels import churn_sample, save_churn

from thimble.modelops import ModelOpsError, Registry, load_modelops_settings
from thimble.modelops.cli import app
from thimble.modelops.errors import SignatureError

pytestmark = pytest.mark.unit
KEY = "k" * 32
runner = CliRunner()
command = typer.main.get_command(app)


@pytest.fixture
def signed(tmp_path: Path, churn_clf: object) -> Registry:
    registry = Registry(str(tmp_path / "models"), signing_key=KEY)
    save_churn(registry, churn_clf)
    return registry


def _version(registry: Registry) -> Path:
    return Path(registry.root) / "churn/versions/1"


def _rewrite_envelope(registry: Registry, change: dict[str, object]) -> None:
    envelope = _version(registry) / "envelope.json"
    doc = orjson.loads(envelope.read_bytes())
    for path, value in change.items():
        target = doc
        *parents, last = path.split(".")
        for part in parents:
            target = target[part]
        target[last] = value
    envelope.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))


def test_a_signed_model_loads_and_predicts(signed: Registry) -> None:
    assert (_version(signed) / "envelope.sig").exists()
    loaded = signed.load("churn@prod")
    assert len(loaded.predict(churn_sample(3))) == 3


def test_a_tampered_artifact_with_its_hash_rewritten_is_refused(
    signed: Registry, numbers_clf: object
) -> None:
    import joblib

    artifact = _version(signed) / "artifacts/clf.joblib"
    joblib.dump(numbers_clf, artifact)
    data = artifact.read_bytes()
    _rewrite_envelope(
        signed,
        {"artifacts.clf.sha256": hashlib.sha256(data).hexdigest(), "artifacts.clf.bytes": len(data)},
    )
    with pytest.raises(SignatureError, match="churn@1: its signature does not verify"):
        signed.load("churn@1")
    # Without the key the registry is trusted as it is: the rewritten hash matches.
    assert Registry(signed.url).load("churn@1").version == 1


def test_a_tampered_pickled_function_with_its_hash_rewritten_is_refused(signed: Registry) -> None:
    function = _version(signed) / "function.pkl"
    function.write_bytes(pickle.dumps("not a model"))
    with pytest.raises(ModelOpsError, match="pickled function is corrupt"):
        Registry(signed.url).load("churn@1")
    _rewrite_envelope(signed, {"function.sha256": hashlib.sha256(function.read_bytes()).hexdigest()})
    with pytest.raises(SignatureError, match="does not verify"):
        signed.load("churn@1")


def test_an_edited_envelope_or_another_key_is_refused(signed: Registry) -> None:
    _rewrite_envelope(signed, {"context.metrics.auc": 0.99})
    with pytest.raises(SignatureError, match="does not verify"):
        signed.load("churn@1")
    other = Registry(signed.url, signing_key="x" * 32)
    with pytest.raises(SignatureError, match="signed with a key this server does not have"):
        other.load("churn@1")


def test_unsigned_models_are_refused_unless_allowed(tmp_path: Path, churn_clf: object) -> None:
    url = str(tmp_path / "models")
    save_churn(Registry(url), churn_clf)
    with pytest.raises(SignatureError, match="churn@1 is not signed and a signing key is configured"):
        Registry(url, signing_key=KEY).load("churn@prod")
    assert Registry(url, signing_key=KEY, allow_unsigned=True).load("churn@prod").version == 1
    sig = Path(url) / "churn/versions/1/envelope.sig"
    sig.write_text('{"algorithm": "hmac-sha256", "signature": "ü"}')
    with pytest.raises(SignatureError, match="does not verify"):
        Registry(url, signing_key=KEY, allow_unsigned=True).load("churn@prod")


def test_a_short_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelOpsError, match=r"modelops\.signing_key: use a random secret of at least 16"):
        Registry(str(tmp_path), signing_key="short")


def test_the_registry_keeps_its_key_when_shipped_to_workers(signed: Registry) -> None:
    shipped = pickle.loads(pickle.dumps(signed))
    assert shipped.signer is not None
    assert KEY not in repr(shipped.signer)
    _rewrite_envelope(signed, {"context.metrics.auc": 0.5})
    with pytest.raises(SignatureError):
        shipped.load("churn@1")


def test_commands_take_the_key_from_settings_and_refuse_in_one_line(
    signed: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THIMBLE_MODELOPS__SIGNING_KEY", KEY)
    assert Registry.from_config(load_modelops_settings().modelops).signer is not None
    shown = runner.invoke(command, ["show", "churn@1", "--registry", signed.url])
    assert "signature: verified" in shown.output
    _rewrite_envelope(signed, {"context.metrics.auc": 0.5})
    for args in (
        ["serve", "churn@prod"],
        ["batch", "churn@prod", "--input", "t", "--output", "u"],
        ["prediction-table", "churn@prod", "--topic", "p"],
    ):
        result = runner.invoke(command, [*args, "--registry", signed.url])
        assert result.exit_code == 2, result.output
        assert "churn@1: its signature does not verify" in " ".join(result.output.split())
        assert "Traceback" not in result.output


OLD_KEY, NEW_KEY = "old-" + "o" * 28, "new-" + "n" * 28


def test_keys_rotate_by_key_id_and_an_unknown_key_id_is_refused(tmp_path: Path, churn_clf: object) -> None:
    url = str(tmp_path / "models")
    save_churn(Registry(url, signing_key=OLD_KEY), churn_clf)  # churn@1, signed with the old key
    settings = load_modelops_settings(
        overrides={"modelops": {"registry": url, "signing_key": NEW_KEY, "previous_signing_keys": [OLD_KEY]}}
    )
    rotated = Registry.from_config(settings.modelops)
    assert rotated.load("churn@1").version == 1  # the old key still verifies what it signed
    save_churn(rotated, churn_clf)  # churn@2, signed with the new key
    sig1, sig2 = (orjson.loads((Path(url) / f"churn/versions/{v}/envelope.sig").read_bytes()) for v in (1, 2))
    assert sig1["key_id"] != sig2["key_id"]
    assert OLD_KEY not in str(sig1)
    assert NEW_KEY not in str(sig2)

    new_only = Registry(url, signing_key=NEW_KEY)
    assert new_only.load("churn@2").version == 2
    with pytest.raises(SignatureError, match="signed with a key this server does not have") as refused:
        new_only.load("churn@1")
    assert sig1["key_id"] in str(refused.value)
    assert OLD_KEY not in str(refused.value)
    with pytest.raises(SignatureError, match="does not have"):
        Registry(url, signing_key=OLD_KEY).load("churn@2")

    # Naming another configured key does not make a signature verify with it.
    (Path(url) / "churn/versions/1/envelope.sig").write_bytes(orjson.dumps(sig1 | {"key_id": sig2["key_id"]}))
    with pytest.raises(SignatureError, match="does not verify"):
        rotated.load("churn@1")
    # A key id that is not a fingerprint is an unreadable signature, not text for an error message.
    (Path(url) / "churn/versions/1/envelope.sig").write_bytes(orjson.dumps(sig1 | {"key_id": "x\n" * 9}))
    with pytest.raises(SignatureError, match="unreadable"):
        rotated.load("churn@1")


def test_previous_keys_need_a_current_key(tmp_path: Path) -> None:
    with pytest.raises(ModelOpsError, match=r"previous_signing_keys needs modelops\.signing_key"):
        Registry(str(tmp_path / "models"), previous_signing_keys=[OLD_KEY])
