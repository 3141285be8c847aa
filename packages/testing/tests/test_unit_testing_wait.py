"""``wait_until``: returns what the condition gave, fails the test naming what it waited for."""

from __future__ import annotations

import itertools

import pytest

from thimble.testing import wait_until

pytestmark = pytest.mark.unit


def test_returns_the_first_truthy_value() -> None:
    calls = itertools.count()
    assert wait_until(lambda: next(calls) >= 3 and "ready", timeout=5, interval=0.001) == "ready"


def test_fails_naming_what_it_waited_for_and_the_last_error() -> None:
    def broken() -> bool:
        raise ConnectionError("refused")

    with pytest.raises(pytest.fail.Exception, match=r"waiting for the broker \(last error: refused\)"):
        wait_until(broken, timeout=0.05, interval=0.01, what="the broker")
