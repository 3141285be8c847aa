"""Fixtures of the stack's tests: a second stack in a temporary run folder, on ports of its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from integration._testing import Stack, make_stack


@pytest.fixture(scope="module")
def side_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A second stack, up, beside the main one; taken down (and checked gone) at the end of the module."""
    stack = make_stack(tmp_path_factory.mktemp("stack-run"))
    result = stack.run("up")
    try:
        if result.returncode != 0:
            pytest.fail(f"`stack.py up` failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        yield stack
    finally:
        stack.run("down")
        stack.kill_leftovers()


@pytest.fixture(scope="session")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack with three Kafka brokers (``up --kafka-brokers 3``) on ports of its own, for the session."""
    from integration._testing import cluster_stack

    stack = cluster_stack(tmp_path_factory.mktemp("cluster-run"))
    result = stack.run("up", "--kafka-brokers", "3")
    try:
        if result.returncode != 0:
            pytest.fail(f"`stack.py up --kafka-brokers 3` failed:\n{result.stdout}\n{result.stderr}")
        yield stack
    finally:
        stack.run("down")
        stack.kill_leftovers()
