"""Thimble's development-only test tooling: helpers for tests against the real local stack.

The fixtures live in :mod:`thimble.testing.plugin`, registered as the pytest plugin ``thimble``.
"""

from thimble.testing.__about__ import __version__
from thimble.testing._wait import wait_until

__all__ = ["__version__", "wait_until"]
