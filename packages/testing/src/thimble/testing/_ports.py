"""Loopback ports for servers a test starts."""

from __future__ import annotations

import errno
import socket

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A loopback TCP port that nothing listens on right now (the kernel's choice)."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


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
