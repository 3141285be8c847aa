"""Every error thimble-modelops reports to its user, in one hierarchy rooted at ThimbleError."""

from __future__ import annotations

from thimble.common.errors import ThimbleError


class ModelOpsError(ThimbleError):
    """Base class of thimble-modelops errors."""


class ModelDefinitionError(ModelOpsError):
    """A decorated model function is not usable: bad signature, missing type hints, bad feature declaration."""


class ModelNotFoundError(ModelOpsError):
    """No model, version or alias by that name in the registry."""


class InvalidNameError(ModelNotFoundError):
    """A model, alias or version name outside the grammar: no such entry can exist in a registry."""


class BrokenEntryError(ModelOpsError):
    """A registry entry (an alias file, an envelope) exists but cannot be read: it is corrupt or truncated."""


class SignatureError(ModelOpsError):
    """A model version's signature is missing or does not verify with the configured signing key."""


class VersionExistsError(ModelOpsError):
    """A model version is immutable: it was already written."""


class ArtifactError(ModelOpsError):
    """An artifact cannot be stored, or is missing or unreadable when a model loads."""


class ModelLoadError(ModelOpsError):
    """A saved model cannot be loaded (its function cannot be imported or unpickled)."""


class SchemaMismatchError(ModelOpsError):
    """Input data (a table, a frame, a message) does not match the model's input schema."""


class PredictionError(ModelOpsError):
    """The model function raised, or returned something that does not match its output schema."""


class FeatureLookupError(ModelOpsError):
    """Declared features are missing from the online store and have no default."""

    def __init__(self, message: str, missing: dict[int, list[str]] | None = None) -> None:
        super().__init__(message)
        self.missing = missing or {}
