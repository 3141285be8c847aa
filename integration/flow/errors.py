"""Errors the flow reports to its user as one readable message."""

from __future__ import annotations

from thimble.common.errors import ThimbleError


class FlowError(ThimbleError):
    """The flow cannot go on: a bad option, a service down, or a stage that failed."""


class StageError(FlowError):
    """One stage of the flow failed; the message says which and why."""

    def __init__(self, stage: str, problem: str) -> None:
        self.stage = stage
        super().__init__(f"{stage}: {problem}")
