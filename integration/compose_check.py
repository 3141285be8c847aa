"""Run docker-compose.yml for real in containers, check the platform's flow in them, tear it all down.

    python integration/compose_check.py [--rebuild-bases] [--keep-on-failure]

Podman (Debian's) stands in for Docker, and podman-compose for Docker Compose. The public images the file
names are built here from Debian's packages when missing (see ``integration/_standins.py``); the three
Thimble images are built from their Dockerfiles as they are. The file's published ports are moved to free
ports (``KAFKA_HOST_PORT`` and the others it reads), so the check runs beside the local stack. It checks:
every event produced, both consumers healthy, the warehouse job done (exit 0, the tables and the model in
the shared volume), a prediction answered by client id, every Prometheus target up. Then every container,
network and volume of the run is removed, also after a failure or Ctrl-C.
"""

from __future__ import annotations

import json
import signal
import socket
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

if __package__ in (None, ""):
    # Run as a script (`python integration/compose_check.py`): make the `integration` package importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import typer
import yaml
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from integration import _podman, _standins
from integration._podman import Podman, PodmanError
from integration._settings import StackSettings
from thimble.common.cli import user_errors

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.yml"
PROJECT = "thimble-compose-check"
# The compose file's published ports, by the variable that moves each one.
PORT_VARIABLES = (
    "KAFKA_HOST_PORT",
    "REDIS_HOST_PORT",
    "CONSUMER_HOST_PORT",
    "AB_CONSUMER_HOST_PORT",
    "MODEL_SERVER_HOST_PORT",
    "PROMETHEUS_HOST_PORT",
)
BUILD_TIMEOUT_S = 1800.0
UP_TIMEOUT_S = 1500.0
DOWN_TIMEOUT_S = 180.0
CHECK_TIMEOUT_S = 120.0
CLIENT_ID = "c00042"
# What a run creates, each labelled with the project, and what the teardown must leave none of.
RESOURCES = ("container", "network", "volume")
MODEL = "return-risk@prod"

app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0] if __doc__ else None)
console = Console(highlight=False, stderr=True)


class CheckFailed(PodmanError):
    """The stack came up but did not do what the compose file promises."""


class Interrupted(BaseException):
    """SIGTERM, turned into an exception so that the teardown runs."""


def say(message: str) -> None:
    console.print(f"[bold]compose-check:[/bold] {message}")


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports free right now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` until truthy (errors count as not yet); CheckFailed after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
            if result:
                return result
        except Exception as exc:
            last = exc
        time.sleep(1.0)
    raise CheckFailed(
        f"timed out after {timeout:.0f}s waiting for {what}" + (f" (last: {last})" if last else "")
    )


def answers(url: str) -> bool:
    """``url`` answers 200."""
    with urllib.request.urlopen(url, timeout=5) as response:
        return bool(response.status == 200)


def http_json(url: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def defaulted_features(metrics: str) -> float:
    """Feature values filled with defaults, summed from the model server's Prometheus exposition text."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics)
        if family.name == "thimble_modelops_missing_features"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels.get("outcome") == "defaulted"
    )


class ComposeRun:
    """One run of the compose file under a fixed project name, on free host ports."""

    def __init__(self, podman: Podman, ports: dict[str, int]) -> None:
        self.podman = podman
        self.ports = ports
        self.services: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
        # (image, the id it had before this run rebuilt it): see Podman.remove_replaced.
        self.replaced: list[tuple[str, str | None]] = []

    def compose(self, *args: str, timeout: float, check: bool = True) -> None:
        argv = [sys.executable, "-m", "integration._podman_compose", "-p", PROJECT, "-f", str(COMPOSE_FILE)]
        env = {name: str(port) for name, port in self.ports.items()}
        self.podman.call([*argv, *args], timeout=timeout, check=check, cwd=REPO, env=env)

    def container(self, service: str) -> str:
        return f"{PROJECT}_{service}_1"

    def url(self, variable: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[variable]}{path}"

    def up(self) -> None:
        say("building the Thimble images from their Dockerfiles")
        started = time.monotonic()
        # podman-compose builds an image once per service that declares its build, in parallel: build
        # each image once, through the first service that declares it.
        shared = sorted({s["image"] for s in self.services.values() if "build" in s})
        for image in shared:
            first = next(name for name, s in self.services.items() if "build" in s and s["image"] == image)
            began = time.monotonic()
            self.replaced.append((image, self.podman.image_id(image)))
            self.compose("build", first, timeout=BUILD_TIMEOUT_S)
            say(f"built {image} in {time.monotonic() - began:.0f}s")
        say(f"images built in {time.monotonic() - started:.0f}s; bringing the stack up")
        started = time.monotonic()
        self.compose("up", "-d", timeout=UP_TIMEOUT_S)
        say(f"every service started in {time.monotonic() - started:.0f}s")

    def check(self) -> None:
        self.check_events()
        self.check_consumers()
        self.check_warehouse()
        self.check_prediction()
        self.check_prometheus()

    def check_events(self) -> None:
        from confluent_kafka import Consumer, TopicPartition

        argv = self.services["generator"]["command"]
        expected = int(argv[argv.index("--count") + 1])
        consumer = Consumer(
            {
                "bootstrap.servers": f"127.0.0.1:{self.ports['KAFKA_HOST_PORT']}",
                "group.id": f"{PROJECT}-probe",
            }
        )
        try:
            topic = consumer.list_topics("client-events", timeout=10).topics["client-events"]
            ends = [
                consumer.get_watermark_offsets(TopicPartition("client-events", p), timeout=10)[1]
                for p in topic.partitions
            ]
        finally:
            consumer.close()
        if sum(ends) != expected:
            raise CheckFailed(
                f"the events topic holds {sum(ends)} events, the generator was asked for {expected}"
            )
        say(f"events produced: {sum(ends)} on client-events, read from the host's Kafka port")

    def check_consumers(self) -> None:
        for service, variable in (
            ("consumer", "CONSUMER_HOST_PORT"),
            ("ab-consumer", "AB_CONSUMER_HOST_PORT"),
        ):
            health = self.podman.run("healthcheck", "run", self.container(service), check=False)
            if health.returncode != 0:
                raise CheckFailed(f"{service} is not healthy: {(health.stdout + health.stderr).strip()}")
            wait_for(partial(answers, self.url(variable, "/readyz")), 30, f"{service} /readyz")
        say("both consumers healthy (health check in the container, /readyz on the host)")

    def check_warehouse(self) -> None:
        code = self.podman.run(
            "inspect", "--format", "{{.State.ExitCode}}", self.container("etl")
        ).stdout.strip()
        if code != "0":
            raise CheckFailed(f"the warehouse job exited with {code}")
        volume = f"{PROJECT}_thimble-data"
        data = Path(
            self.podman.run("volume", "inspect", "--format", "{{.Mountpoint}}", volume).stdout.strip()
        )
        tables = sorted(
            p.parent.relative_to(data / "warehouse") for p in (data / "warehouse").rglob("_delta_log")
        )
        models = data / "models"
        if len(tables) < 4 or not models.is_dir() or not any(models.iterdir()):
            raise CheckFailed(f"the warehouse job left tables {tables} and models {models} incomplete")
        say(f"warehouse job done: exit 0, Delta tables {', '.join(map(str, tables))}, a saved model")

    def check_prediction(self) -> None:
        url = self.url("MODEL_SERVER_HOST_PORT", f"/v1/models/{MODEL}/predict")
        defaulted = self.defaulted_features()
        answer = wait_for(
            lambda: http_json(url, {"client_id": CLIENT_ID}), CHECK_TIMEOUT_S, f"a prediction at {url}"
        )
        predictions = answer.get("predictions") if isinstance(answer, dict) else None
        if not isinstance(predictions, list) or len(predictions) != 1 or not predictions[0]:
            raise CheckFailed(f"the model server answered {CLIENT_ID} without one prediction: {answer}")
        # The model's features are looked up by client id; a client the online store lacks gets defaults.
        if self.defaulted_features() != defaulted:
            raise CheckFailed(f"{CLIENT_ID} was predicted from default features: the online store lacks it")
        say(f"prediction for {CLIENT_ID} from its online features, on port 8080: {json.dumps(answer)[:200]}")

    def defaulted_features(self) -> float:
        """How many feature values the model server has filled with defaults so far."""
        with urllib.request.urlopen(self.url("MODEL_SERVER_HOST_PORT", "/metrics"), timeout=10) as response:
            return defaulted_features(response.read().decode())

    def check_prometheus(self) -> None:
        url = self.url("PROMETHEUS_HOST_PORT", "/api/v1/targets")

        def all_up() -> list[str]:
            targets = http_json(url)["data"]["activeTargets"]
            return [t["scrapeUrl"] for t in targets] if all(t["health"] == "up" for t in targets) else []

        up = wait_for(all_up, CHECK_TIMEOUT_S, "every Prometheus target up")
        say(f"Prometheus: every target up ({', '.join(up)})")

    def logs(self) -> None:
        """The last lines of every container of the run, for a failure's report."""
        listed = self.podman.run(
            "ps",
            "-a",
            "--filter",
            f"label=io.podman.compose.project={PROJECT}",
            "--format",
            "{{.Names}} {{.Status}}",
        )
        for line in listed.stdout.splitlines():
            name = line.split()[0]
            tail = self.podman.run("logs", "--tail", "25", name, check=False)
            console.print(f"--- {line}\n{(tail.stdout + tail.stderr).rstrip()}", markup=False)

    def down(self) -> None:
        """Remove every container, network and volume of the project, whatever state the run left."""
        self.compose("down", "-v", "-t", "10", timeout=DOWN_TIMEOUT_S, check=False)
        for kind in RESOURCES:
            names = self.leftover(kind)
            if names:
                self.podman.run(kind, "rm", "-f", *names, check=False)
        left = {kind: names for kind in RESOURCES if (names := self.leftover(kind))}
        if left:
            raise PodmanError(f"{PROJECT} left these after the teardown: {left}")

    def leftover(self, kind: str) -> list[str]:
        """The containers, networks or volumes of the project that exist now."""
        every = ["--all"] if kind == "container" else []
        label = f"label=io.podman.compose.project={PROJECT}"
        return self.podman.run(kind, "ls", *every, "-q", "--filter", label).stdout.split()


@contextmanager
def teardown_on_exit(run: ComposeRun, keep_on_failure: bool) -> Iterator[None]:
    """Tear the run down on success, failure, Ctrl-C or SIGTERM (and finish the teardown before exiting)."""

    def interrupted(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, interrupted)
    failed = True
    try:
        yield
        failed = False
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            if failed:
                run.logs()
            if failed and keep_on_failure:
                say(f"left running for a look: podman ps --filter label=io.podman.compose.project={PROJECT}")
            else:
                say("tearing down")
                run.down()
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, previous)


@app.command()
def main(
    rebuild_bases: bool = typer.Option(False, "--rebuild-bases", help="Build the stand-in images again."),
    keep_on_failure: bool = typer.Option(
        False, "--keep-on-failure", help="Leave a failed run up to look at."
    ),
) -> None:
    """Build every image, run docker-compose.yml in containers, check the flow, remove it all."""
    try:
        user_errors(lambda: _check(rebuild_bases, keep_on_failure))()
    except (Interrupted, KeyboardInterrupt) as exc:
        say(f"interrupted ({exc or 'SIGINT'}); the run was torn down")
        raise typer.Exit(130 if isinstance(exc, KeyboardInterrupt) else 143) from None


def _check(rebuild_bases: bool, keep_on_failure: bool) -> None:
    started = time.monotonic()
    _podman.install_packages()
    settings = StackSettings.from_env()
    work_dir = settings.run_dir / "compose-check"
    podman = Podman(work_dir)
    standins = _standins.plan(_standins.public_images(COMPOSE_FILE), settings.jars_dir / "kafka")
    builder = _standins.StandIns(podman, work_dir, say)
    built = builder.ensure(standins, rebuild=rebuild_bases)
    say(f"stand-in images ready ({len(built)} built) in {time.monotonic() - started:.0f}s")
    run = ComposeRun(podman, dict(zip(PORT_VARIABLES, free_ports(len(PORT_VARIABLES)), strict=True)))
    run.down()  # what a killed earlier run may have left
    try:
        with teardown_on_exit(run, keep_on_failure):
            run.up()
            run.check()
    finally:
        # The images this run replaced, each image's children before its parents, so no run piles them up.
        podman.remove_replaced([*reversed(run.replaced), *reversed(builder.replaced)])
    say(f"passed in {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    app()
