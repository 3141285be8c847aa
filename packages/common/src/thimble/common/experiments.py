"""Sticky assignment of entities to the arms of an experiment or to a canary's share.

An entity's place in an experiment is a SHA-256 bucket in [0, 1) of ``"<experiment>:<entity>"``: uniform,
stable across processes and releases, and independent between experiments. Every package that splits
traffic or assigns arms uses this rule, so a client is on the same side wherever it is asked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any


def bucket(experiment: str, entity: Any) -> float:
    """Where ``entity`` falls in [0, 1) for ``experiment``."""
    digest = hashlib.sha256(f"{experiment}:{entity}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def arm_of(experiment: str, entity: Any, arms: Sequence[tuple[str, float]]) -> str:
    """The arm ``entity`` falls in: ``arms`` are (name, share) in order, their shares summing to 1."""
    if not arms:
        raise ValueError("an experiment needs at least one arm")
    point, edge = bucket(experiment, entity), 0.0
    for name, share in arms:
        edge += share
        if point < edge:
            return name
    return arms[-1][0]
