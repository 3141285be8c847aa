"""The compose check's pure parts: which stand-ins it builds, how it names them, how it moves ports."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from integration import _standins, compose_check
from integration._podman import PodmanError, installed
from integration._podman_compose import duration_seconds

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def test_the_stand_ins_are_every_public_image_of_the_compose_file_and_its_dockerfiles() -> None:
    images = _standins.public_images(REPO / "docker-compose.yml")
    assert {_standins.repository(image) for image in images} == set(_standins.RECIPE_OF)
    assert "python:3.11-slim-bookworm" in images
    assert not any(image.startswith("thimble-") for image in images)
    assert "jars" not in images  # a build stage's name is not an image


def test_stand_ins_are_named_as_docker_resolves_the_short_names() -> None:
    assert _standins.qualified("python:3.11-slim") == "docker.io/library/python:3.11-slim"
    assert _standins.qualified("apache/kafka:4.1.1") == "docker.io/apache/kafka:4.1.1"
    assert _standins.qualified("localhost/thimble-standin/java:17") == "localhost/thimble-standin/java:17"
    assert _standins.qualified("quay.io/prometheus/prometheus:v3") == "quay.io/prometheus/prometheus:v3"


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("install ok installed", True),
        ("unknown ok not-installed", False),  # removed with --purge: still known to dpkg
        ("deinstall ok config-files", False),
        ("install ok half-installed", False),
        ("", False),  # never installed: dpkg-query prints nothing
    ],
)
def test_a_package_counts_as_installed_only_when_dpkg_says_so(status: str, expected: bool) -> None:
    assert installed(status) is expected


def test_an_image_without_a_recipe_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(PodmanError, match="no stand-in recipe for postgres:16"):
        _standins.plan(["postgres:16"], tmp_path)


def test_parents_are_built_before_the_images_on_them(tmp_path: Path) -> None:
    order = [s.image for s in _standins.plan(_standins.public_images(REPO / "docker-compose.yml"), tmp_path)]
    for standin in _standins.plan(["apache/kafka:4.1.1", "redis:7"], tmp_path):
        if standin.parent in order:
            assert order.index(standin.parent) < order.index(standin.image)


def test_every_published_port_moves_with_its_variable_and_kafka_advertises_the_moved_one() -> None:
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    variables = set()
    for name, service in services.items():
        for entry in service.get("ports", []):
            match = re.fullmatch(r"127\.0\.0\.1:\$\{([A-Z_]+):-\d+\}:\d+", entry)
            assert match, f"{name}: {entry} is not on a movable loopback port"
            variables.add(match.group(1))
    assert variables == set(compose_check.PORT_VARIABLES)
    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert "PLAINTEXT://127.0.0.1:${KAFKA_HOST_PORT:-9092}" in advertised


def test_free_ports_are_distinct() -> None:
    ports = compose_check.free_ports(6)
    assert len(set(ports)) == 6


@pytest.mark.parametrize(("text", "seconds"), [("5s", 5.0), ("1m30s", 90.0), ("500ms", 0.5), ("2h", 7200.0)])
def test_compose_durations(text: str, seconds: float) -> None:
    assert duration_seconds(text) == seconds


def test_a_malformed_duration_is_refused() -> None:
    with pytest.raises(Exception, match="not a Compose duration"):
        duration_seconds("5 seconds")


def test_defaulted_features_are_summed_from_the_model_servers_own_metrics() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from thimble.modelops.server import ServerMetrics

    registry = CollectorRegistry()
    metrics = ServerMetrics(registry)
    assert compose_check.defaulted_features(generate_latest(registry).decode()) == 0
    metrics.missing.labels("return-risk", "1", "visits", "defaulted").inc(3)
    metrics.missing.labels("return-risk", "1", "orders", "defaulted").inc(2)
    metrics.missing.labels("return-risk", "1", "orders", "missing").inc(7)
    metrics.predictions.labels("return-risk", "1").inc(11)
    assert compose_check.defaulted_features(generate_latest(registry).decode()) == 5
