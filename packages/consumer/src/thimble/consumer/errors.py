"""Every error thimble-consumer raises, in one hierarchy rooted at :class:`ThimbleError`."""

from __future__ import annotations

from thimble.common.errors import ServiceUnavailableError, ThimbleError

__all__ = [
    "AppLoadError",
    "ConsumerError",
    "DeadLetterError",
    "DecodeError",
    "DeliveryError",
    "HandlerSignatureError",
    "RecordTooLarge",
    "Retriable",
    "ServiceUnavailableError",
    "SinkError",
    "TopicMissingError",
]


class ConsumerError(ThimbleError):
    """Base class of thimble-consumer's errors."""


class HandlerSignatureError(ConsumerError, TypeError):
    """A handler's signature or options cannot be served; the message names the function and its line."""


class AppLoadError(ConsumerError):
    """``module:attr`` does not name an importable :class:`~thimble.consumer.App`."""


class TopicMissingError(ConsumerError):
    """A topic the app reads or writes does not exist (``--create-topics`` creates it)."""


class DecodeError(ConsumerError):
    """A message could not be decoded or validated into the handler's input type (never retried)."""


class SinkError(ConsumerError):
    """A sink could not accept an output (retried, then fatal: the offset is not committed)."""


class RecordTooLarge(ConsumerError):
    """An output or dead letter is larger than the producer may send (``message.max.bytes``); the input
    is dead-lettered (a dead letter is sent again with its value cut, see the README)."""


class DeliveryError(ConsumerError):
    """An output or dead letter was not acknowledged; the consumer stops without committing it."""

    exit_code = 1


class DeadLetterError(DeliveryError):
    """A dead letter could not be written; the consumer stops rather than lose the record."""


class Retriable(Exception):
    """Raise (or subclass) this in a handler for a transient failure: the message is retried with backoff."""
