"""Signatures of model versions: HMAC-SHA256 over the envelope, which holds the SHA-256 of every file.

A signed version has ``envelope.sig`` beside its ``envelope.json``. The signature covers the envelope's
exact bytes, and the envelope records the hash of each artifact, of the pickled function and of the
sample, so changing any file (and rewriting its hash in the envelope) breaks the signature.

Each signature names its key by a key id, a fingerprint of the key (never the key), so keys can rotate:
saves sign with ``modelops.signing_key``; loads verify with whichever configured key the signature names,
the current one or one of ``modelops.previous_signing_keys``, and refuse a key id none of them has.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

import orjson
from pydantic import BaseModel, Field, ValidationError

from thimble.modelops.errors import ModelOpsError, SignatureError

ALGORITHM = "hmac-sha256"
SIGNATURE_FILE = "envelope.sig"
MIN_KEY_BYTES = 16


class Signature(BaseModel):
    """The content of ``envelope.sig`` (``key_id`` is absent from signatures made before keys had ids)."""

    algorithm: str
    signature: str
    key_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{16}$")


def key_id(key: bytes) -> str:
    """The public name of a signing key: a fingerprint from which the key cannot be recovered."""
    return hashlib.sha256(b"thimble-modelops signing key id\0" + key).hexdigest()[:16]


def _key_bytes(key: str | bytes, setting: str) -> bytes:
    data = key.encode() if isinstance(key, str) else bytes(key)
    if len(data) < MIN_KEY_BYTES:
        raise ModelOpsError(f"{setting}: use a random secret of at least {MIN_KEY_BYTES} characters")
    return data


class Signer:
    """Signs envelopes with the current key and verifies them with any configured key, by key id."""

    def __init__(self, key: str | bytes, previous: Iterable[str | bytes] = ()) -> None:
        self._key = _key_bytes(key, "modelops.signing_key")
        self._previous = [_key_bytes(k, "modelops.previous_signing_keys") for k in previous]
        self.key_id = key_id(self._key)
        self._keys = {key_id(k): k for k in [*self._previous, self._key]}

    def __repr__(self) -> str:
        return f"Signer(key_id={self.key_id!r})"

    def __reduce__(self) -> tuple[type[Signer], tuple[bytes, list[bytes]]]:
        return Signer, (self._key, self._previous)

    @staticmethod
    def _digest(key: bytes, envelope: bytes) -> str:
        return hmac.new(key, envelope, hashlib.sha256).hexdigest()

    def sign(self, envelope: bytes) -> bytes:
        """The ``envelope.sig`` content for these envelope bytes, signed with the current key."""
        return orjson.dumps(
            {"algorithm": ALGORITHM, "key_id": self.key_id, "signature": self._digest(self._key, envelope)}
        )

    def verify(self, envelope: bytes, signature: bytes | None, ref: str, allow_unsigned: bool) -> None:
        """Raise :class:`SignatureError` unless ``signature`` signs ``envelope`` with a configured key."""
        if signature is None:
            if allow_unsigned:
                return
            raise SignatureError(
                f"model {ref} is not signed and a signing key is configured; save it again with the key "
                "(or set modelops.allow_unsigned to load unsigned models)"
            )
        try:
            sig = Signature.model_validate_json(signature)
        except ValidationError:
            raise SignatureError(f"model {ref}: its signature file {SIGNATURE_FILE} is unreadable") from None
        if sig.algorithm != ALGORITHM:
            raise SignatureError(f"model {ref}: signed with {sig.algorithm!r}; expected {ALGORITHM}")
        if sig.key_id is None:
            candidates = list(self._keys.values())  # signed before keys had ids
        elif sig.key_id in self._keys:
            candidates = [self._keys[sig.key_id]]
        else:
            known = ", ".join(sorted(self._keys))
            raise SignatureError(
                f"model {ref}: signed with a key this server does not have (key id {sig.key_id}; "
                f"configured: {known}); add it to modelops.previous_signing_keys or save the model again"
            )
        expected = sig.signature.encode()
        if not any(hmac.compare_digest(expected, self._digest(k, envelope).encode()) for k in candidates):
            raise SignatureError(
                f"model {ref}: its signature does not verify (the model was changed after it was "
                "saved, or signed with another key); refusing to load it"
            )
