"""Loopback ports for servers a test starts."""

from __future__ import annotations

import errno
import random
import socket

LOOPBACK = "127.0.0.1"
# Where free_port looks: below the kernel's ephemeral range (32768-60999 on Linux), from which outgoing
# connections take their local ports. A port the kernel handed out could be taken by a connection (to
# Kafka, say) between the moment it was chosen and the moment the server binds it; a port below the
# range cannot. Clear of the runs the test stacks start from (16379 to 19500, 25002 and up).
FREE_PORTS = range(20_000, 25_000)


def free_port() -> int:
    """A loopback TCP port that nothing listens on right now, below the ephemeral range (:data:`FREE_PORTS`)."""
    for port in random.sample(FREE_PORTS, 100):
        if port_free(port):
            return port
    raise RuntimeError(f"no free port among 100 tried in {FREE_PORTS.start}-{FREE_PORTS.stop - 1}")


def port_free(port: int, host: str = LOOPBACK) -> bool:
    """Whether a server could bind ``host:port`` now (a socket in TIME_WAIT does not count as taken)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def free_port_run(start: int, count: int = 1, *, step: int = 1, span: int = 200) -> int:
    """The first of ``count`` consecutive free ports at or after ``start``, trying every ``step``-th port.

    For services whose ports must be known in advance or come in runs (a Kafka broker and its controller).
    """
    for first in range(start, start + span, step):
        if all(port_free(port) for port in range(first, first + count)):
            return first
    raise RuntimeError(f"no {count} free consecutive port(s) in {start}-{start + span}")
