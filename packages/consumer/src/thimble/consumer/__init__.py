"""thimble-consumer: a production Kafka consumer from one typed Python function."""

from thimble.consumer.__about__ import __version__
from thimble.consumer._dead_letters import DeadLetter
from thimble.consumer._lag import PartitionLag, group_lag
from thimble.consumer._runner import Runner
from thimble.consumer.app import App
from thimble.consumer.config import ConsumerConfig, ConsumerSettings
from thimble.consumer.context import Context, Output
from thimble.consumer.errors import (
    AppLoadError,
    ConsumerError,
    DeadLetterError,
    DecodeError,
    DeliveryError,
    HandlerSignatureError,
    Retriable,
    SinkError,
    TopicMissingError,
)
from thimble.consumer.sinks import Landing, OnlineStore, Topic
from thimble.consumer.testing import TestClient

__all__ = [
    "App",
    "AppLoadError",
    "ConsumerConfig",
    "ConsumerError",
    "ConsumerSettings",
    "Context",
    "DeadLetter",
    "DeadLetterError",
    "DecodeError",
    "DeliveryError",
    "HandlerSignatureError",
    "Landing",
    "OnlineStore",
    "Output",
    "PartitionLag",
    "Retriable",
    "Runner",
    "SinkError",
    "TestClient",
    "Topic",
    "TopicMissingError",
    "__version__",
    "group_lag",
]
