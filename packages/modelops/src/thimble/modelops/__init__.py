"""thimble-modelops: a model is a typed function plus its context; serve it, batch it, stream it, track it."""

from thimble.modelops.__about__ import __version__
from thimble.modelops._alias_history import AliasMove
from thimble.modelops._prediction_log import prediction_table_config
from thimble.modelops.config import ModelOpsConfig, ModelOpsSettings, load_modelops_settings
from thimble.modelops.envelope import LoadedModel, ModelContext, ModelFunction, ModelInfo, model
from thimble.modelops.errors import (
    ArtifactError,
    BrokenEntryError,
    FeatureLookupError,
    InvalidNameError,
    ModelDefinitionError,
    ModelLoadError,
    ModelNotFoundError,
    ModelOpsError,
    PredictionError,
    SchemaMismatchError,
    SignatureError,
    VersionExistsError,
)
from thimble.modelops.registry import ModelRef, Registry
from thimble.modelops.tracking import Tracker
from thimble.modelops.training import TrainingSet, TrainingSetSpec, training_set, training_set_from_spec

__all__ = [
    "AliasMove",
    "ArtifactError",
    "BrokenEntryError",
    "FeatureLookupError",
    "InvalidNameError",
    "LoadedModel",
    "ModelContext",
    "ModelDefinitionError",
    "ModelFunction",
    "ModelInfo",
    "ModelLoadError",
    "ModelNotFoundError",
    "ModelOpsConfig",
    "ModelOpsError",
    "ModelOpsSettings",
    "ModelRef",
    "PredictionError",
    "Registry",
    "SchemaMismatchError",
    "SignatureError",
    "Tracker",
    "TrainingSet",
    "TrainingSetSpec",
    "VersionExistsError",
    "__version__",
    "load_modelops_settings",
    "model",
    "prediction_table_config",
    "training_set",
    "training_set_from_spec",
]
