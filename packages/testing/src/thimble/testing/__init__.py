"""Thimble's development-only test tooling: helpers for tests against the real local stack.

The fixtures live in :mod:`thimble.testing.plugin`, registered as the pytest plugin ``thimble``.
"""

from thimble.testing.__about__ import __version__
from thimble.testing._kafka import TopicReader, produce
from thimble.testing._ports import free_port, free_port_run, port_free
from thimble.testing._servers import LiveServer, ServerProcess, answers_ok
from thimble.testing._spark import OVER_CONNECT, in_process_only, in_process_pass
from thimble.testing._wait import wait_until

__all__ = [
    "OVER_CONNECT",
    "LiveServer",
    "ServerProcess",
    "TopicReader",
    "__version__",
    "answers_ok",
    "free_port",
    "free_port_run",
    "in_process_only",
    "in_process_pass",
    "port_free",
    "produce",
    "wait_until",
]
