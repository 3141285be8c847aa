"""A flow stage that runs far longer than it should says so, and leaves where every thread waits."""

from __future__ import annotations

import io
import threading
from datetime import date
from pathlib import Path

import pytest
from rich.console import Console

from integration.flow import pipeline
from integration.flow.pipeline import Flow, FlowConfig, FlowSettings
from thimble.common.config import load_settings
from thimble.modelops import Registry
from thimble.testing import wait_until

pytestmark = pytest.mark.unit


def test_a_stage_that_runs_too_long_says_so_and_writes_every_threads_stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "STALL_S", 0.2)
    out = io.StringIO()
    flow = _flow(tmp_path, out)
    with flow.stage("skew check", "compared", spinner=False):
        wait_until(lambda: "skew check has run for" in out.getvalue(), 10, what="the stall message")
    stacks = (tmp_path / "logs" / "stalled-skew-check.txt").read_text()
    assert "test_a_stage_that_runs_too_long_says_so" in stacks  # this thread, waiting in the stage
    assert str(tmp_path / "logs" / "stalled-skew-check.txt") in out.getvalue()


def test_a_stage_that_ends_in_time_stops_its_watchdog(tmp_path: Path) -> None:
    out = io.StringIO()
    flow = _flow(tmp_path, out)
    with flow.stage("skew check", "compared", spinner=False):
        assert _watchdogs()
    wait_until(lambda: not _watchdogs(), 10, what="the stage's watchdog stopped")
    assert "compared" in out.getvalue()
    assert not (tmp_path / "logs").exists()


def _watchdogs() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if isinstance(t, threading.Timer) and t.is_alive()]


def _flow(tmp_path: Path, out: io.StringIO) -> Flow:
    return Flow(
        FlowConfig(day=date(2026, 1, 1)),
        load_settings(FlowSettings),
        Console(file=out, width=300),
        registry=Registry(str(tmp_path / "registry")),
        logs=tmp_path / "logs",
    )
