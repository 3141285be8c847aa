"""Loopback ports: a free one binds, a listened one is taken, a run of free ones skips a taken port."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from thimble.testing import free_port, free_port_run, port_free
from thimble.testing._ports import FREE_PORTS

pytestmark = pytest.mark.unit


def test_a_free_port_binds_and_a_listened_port_is_taken() -> None:
    port = free_port()
    assert port_free(port)
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))
        server.listen()
        assert not port_free(port)


def test_a_free_port_lies_below_the_ephemeral_range() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = {free_port() for _ in range(20)}
    assert all(port in FREE_PORTS and port < low for port in ports)
    assert len(ports) > 1  # drawn at random: two tests' servers rarely meet on one port


def test_a_run_of_free_ports_starts_after_a_taken_one() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        taken = server.getsockname()[1]
        first = free_port_run(taken - 1, 2, span=50)
        assert taken not in (first, first + 1)
        assert all(port_free(p) for p in (first, first + 1))


def test_no_free_run_is_a_clear_error() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        taken = server.getsockname()[1]
        with pytest.raises(RuntimeError, match=rf"no 1 free consecutive port\(s\) in {taken}-{taken + 1}"):
            free_port_run(taken, span=1)
