"""Signatures of model versions: HMAC-SHA256 over the envelope, which holds the SHA-256 of every file.

A signed version has ``envelope.sig`` beside its ``envelope.json``. The signature covers the envelope's
exact bytes, and the envelope records the hash of each artifact, of the pickled function and of the
sample, so changing any file (and rewriting its hash in the envelope) breaks the signature.
"""

from __future__ import annotations

import hashlib
import hmac

import orjson
from pydantic import BaseModel, ValidationError

from thimble.modelops.errors import ModelOpsError, SignatureError

ALGORITHM = "hmac-sha256"
SIGNATURE_FILE = "envelope.sig"
MIN_KEY_BYTES = 16


class Signature(BaseModel):
    """The content of ``envelope.sig``."""

    algorithm: str
    signature: str


class Signer:
    """Signs and verifies envelopes with one secret key (``modelops.signing_key``)."""

    def __init__(self, key: str | bytes) -> None:
        self._key = key.encode() if isinstance(key, str) else bytes(key)
        if len(self._key) < MIN_KEY_BYTES:
            raise ModelOpsError(
                f"modelops.signing_key: use a random secret of at least {MIN_KEY_BYTES} characters"
            )

    def __repr__(self) -> str:
        return "Signer(***)"

    def __reduce__(self) -> tuple[type[Signer], tuple[bytes]]:
        return Signer, (self._key,)

    def _digest(self, envelope: bytes) -> str:
        return hmac.new(self._key, envelope, hashlib.sha256).hexdigest()

    def sign(self, envelope: bytes) -> bytes:
        """The ``envelope.sig`` content for these envelope bytes."""
        return orjson.dumps({"algorithm": ALGORITHM, "signature": self._digest(envelope)})

    def verify(self, envelope: bytes, signature: bytes | None, ref: str, allow_unsigned: bool) -> None:
        """Raise :class:`SignatureError` unless ``signature`` signs ``envelope`` with this key."""
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
        if not hmac.compare_digest(sig.signature.encode(), self._digest(envelope).encode()):
            raise SignatureError(
                f"model {ref}: its signature does not verify (the model was changed after it was "
                "saved, or signed with another key); refusing to load it"
            )
