"""Markers for the Spark tests, which CI runs twice: on Spark in process, then over Spark Connect."""

from __future__ import annotations

import pytest

from thimble.common.config import load_settings

OVER_CONNECT = bool(load_settings().spark.remote)
"""The tests' Spark session is a Spark Connect client (``THIMBLE_SPARK__REMOTE``), not Spark in process."""

in_process_only = pytest.mark.skipif(
    OVER_CONNECT, reason="Spark Connect reports neither job counts nor accumulators to its client"
)
"""For a test that proves a pass count with Spark's job counts or an accumulator."""

in_process_pass = pytest.mark.skipif(
    OVER_CONNECT, reason="tests nothing of Spark Connect: run in process only"
)
"""For a slow test of behaviour that does not depend on the session's kind: CI's pass over Spark Connect
(``pytest -m spark``) would only run it again."""
