"""thimble-common: configuration, logging, metrics and the Spark session shared by every Thimble package."""

from thimble.common.__about__ import __version__
from thimble.common.config import (
    KafkaConfig,
    LoggingConfig,
    MetricsConfig,
    OnlineStoreConfig,
    Section,
    SparkConfig,
    ThimbleSettings,
    WarehouseConfig,
    load_settings,
)
from thimble.common.errors import ConfigError, ServiceUnavailableError, ThimbleError
from thimble.common.features import FeatureSet
from thimble.common.logging import bind_context, configure_logging, get_logger, register_secret
from thimble.common.metrics import Metrics, MetricsServer, metric_name

__all__ = [
    "ConfigError",
    "FeatureSet",
    "KafkaConfig",
    "LoggingConfig",
    "Metrics",
    "MetricsConfig",
    "MetricsServer",
    "OnlineStoreConfig",
    "Section",
    "ServiceUnavailableError",
    "SparkConfig",
    "ThimbleError",
    "ThimbleSettings",
    "WarehouseConfig",
    "__version__",
    "bind_context",
    "configure_logging",
    "get_logger",
    "load_settings",
    "metric_name",
    "register_secret",
]
