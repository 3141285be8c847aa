"""Errors the local stack reports to its user as plain messages."""

from __future__ import annotations

from thimble.common.errors import ThimbleError


class StackError(ThimbleError):
    """The local stack could not do what was asked (a service failed, a port is taken, a tool is missing)."""

    exit_code = 1


class PortTakenError(StackError):
    """A port the stack needs is used by another program."""


class ServiceFailedError(StackError):
    """A service did not come up (or go down) within its bound."""


class JarsError(StackError):
    """Maven could not resolve the stack's jars, or they are missing."""
