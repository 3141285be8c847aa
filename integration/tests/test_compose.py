"""docker-compose.yml, checked without Docker: the Compose schema, and that every image, command and port
it names exists and matches the local stack."""

from __future__ import annotations

import copy
import importlib
import importlib.metadata
import importlib.util
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import typer.main
import yaml
from packaging.requirements import Requirement

from integration.compose import image_requirements

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
SCHEMA = REPO / "integration" / "compose" / "compose_spec.json"
PROMETHEUS = REPO / "integration" / "compose" / "prometheus.yml"
OWN_IMAGE = re.compile(r"^thimble-(consumer|etl|modelops):")
IMAGES = ("consumer", "etl", "modelops")
REQUIREMENTS_SCRIPT = REPO / "integration" / "compose" / "image_requirements.py"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def _validator() -> Any:
    return jsonschema_rs.validator_for(json.loads(SCHEMA.read_text()))


def _dockerfile(service: dict[str, Any], services: dict[str, dict[str, Any]]) -> Path | None:
    """The Dockerfile a service's image is built from (its own build, or the service that builds its image)."""
    builder = (
        service
        if "build" in service
        else next(
            (s for s in services.values() if "build" in s and s.get("image") == service.get("image")), None
        )
    )
    if builder is None:
        return None
    build = builder["build"]
    return REPO / build["context"] / build.get("dockerfile", "Dockerfile")


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _argv(service: dict[str, Any], dockerfile: Path | None) -> list[str]:
    """entrypoint + command, each from the service or else from the image's Dockerfile."""

    def from_dockerfile(kind: str) -> list[str]:
        if dockerfile is None:
            return []
        values = [json.loads(args) for word, args in _instructions(dockerfile) if word == kind]
        return list(values[-1]) if values else []

    entrypoint = service.get("entrypoint", from_dockerfile("ENTRYPOINT"))
    command = service.get("command", from_dockerfile("CMD") if "entrypoint" not in service else [])
    return [*entrypoint, *command]


def _click_command(argv: list[str]) -> tuple[Any, list[str]]:
    """The click command an argv runs (a package CLI and its subcommand, or a ``python -m`` typer module)."""
    if argv[:2] == ["python", "-m"]:
        module = importlib.import_module(argv[2])
        app = getattr(module, "app", None) or module.cli
        return typer.main.get_command(app), argv[3:]
    package = argv[0].removeprefix("thimble-")
    project = tomllib.loads((REPO / "packages" / package / "pyproject.toml").read_text())["project"]
    target = project["scripts"][argv[0]]
    module_name, _, attr = target.partition(":")
    group = typer.main.get_command(getattr(importlib.import_module(module_name), attr))
    commands: dict[str, Any] = getattr(group, "commands", {})
    sub = commands.get(argv[1])
    assert sub is not None, f"{argv[0]} has no command {argv[1]!r}; it has {sorted(commands)}"
    return sub, argv[2:]


def _defaults(text: str) -> str:
    """``${VAR:-default}`` replaced by its default, as Compose reads the file when VAR is unset."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", text)


def _published(service: dict[str, Any]) -> dict[int, int]:
    """Container port -> host port of ``127.0.0.1:HOST:CONTAINER`` entries (host ports at their defaults)."""
    out = {}
    for entry in service.get("ports", []):
        *_, host, container = _defaults(str(entry)).split(":")
        out[int(container)] = int(host)
    return out


def test_the_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    problems = [str(e).splitlines()[0] for e in _validator().iter_errors(compose)]
    assert problems == []


def test_the_schema_check_catches_a_broken_service(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["consumer"]["depends_on"]["redis"]["condition"] = "whenever"
    broken["services"]["redis"]["healthcheck"]["retries"] = "many"
    assert len(list(_validator().iter_errors(broken))) == 2


def test_every_build_context_dockerfile_and_copied_path_exists(services: dict[str, dict[str, Any]]) -> None:
    built = [s for s in services.values() if "build" in s]
    assert {_dockerfile(s, services) for s in built} == {
        REPO / "packages" / p / "Dockerfile" for p in ("consumer", "etl", "modelops")
    }
    for service in built:
        context = REPO / service["build"]["context"]
        dockerfile = _dockerfile(service, services)
        assert context.is_dir()
        assert dockerfile is not None
        assert dockerfile.is_file()
        for word, args in _instructions(dockerfile):
            if word == "COPY" and "--from=" not in args:
                *sources, _target = args.split()
                for source in sources:
                    assert (context / source).exists(), f"{dockerfile}: COPY {source} does not exist"


def test_images_are_python_311_slim_and_the_etl_one_has_java_17_and_the_stack_jars() -> None:
    for package in ("consumer", "etl", "modelops"):
        bases = [
            args for word, args in _instructions(REPO / "packages" / package / "Dockerfile") if word == "FROM"
        ]
        # Pinned to bookworm: the floating tag moved to a Debian without openjdk-17.
        assert bases[-1] == "python:3.11-slim-bookworm"
    etl = (REPO / "packages" / "etl" / "Dockerfile").read_text()
    assert "openjdk-17-jre-headless" in etl
    assert "COPY integration/jars/spark/pom.xml" in etl
    assert "dependency:copy-dependencies" in etl


def test_every_command_names_a_real_cli_module_and_options(services: dict[str, dict[str, Any]]) -> None:
    checked = 0
    for name, service in services.items():
        if not OWN_IMAGE.match(service.get("image", "")):
            continue
        dockerfile = _dockerfile(service, services)
        argv = _argv(service, dockerfile)
        command, rest = _click_command(argv)
        options = {opt for param in command.params for opt in param.opts + param.secondary_opts}
        for arg in rest:
            if arg.startswith("--"):
                assert arg.split("=")[0] in options, f"{name}: {argv[:2]} has no option {arg}"
            elif re.fullmatch(r"[\w.]+:\w+", arg):
                module_name, attr = arg.split(":")
                assert importlib.util.find_spec(module_name) is not None, f"{name}: no module {module_name}"
                assert hasattr(importlib.import_module(module_name), attr), f"{name}: no {arg}"
        modules = [a for a in argv if a.startswith("integration.")]
        if modules:
            assert dockerfile is not None
            assert "COPY integration/flow integration/flow" in dockerfile.read_text()
        checked += 1
    assert checked == 5


def test_ports_and_versions_match_the_local_stack(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from integration._settings import StackSettings
    from thimble.common.config import MetricsConfig
    from thimble.modelops.config import ServerConfig

    for variable in ("THIMBLE_STACK_KAFKA_PORT", "THIMBLE_STACK_REDIS_PORT"):
        monkeypatch.delenv(variable, raising=False)
    stack = StackSettings.from_env()
    assert _published(services["kafka"]) == {stack.kafka_port: stack.kafka_port}
    assert _published(services["redis"]) == {stack.redis_port: stack.redis_port}
    pom = (REPO / "integration" / "jars" / "kafka" / "pom.xml").read_text()
    version = re.search(r"<kafka.version>(.+?)</kafka.version>", pom)
    assert version is not None
    assert services["kafka"]["image"] == f"apache/kafka:{version.group(1)}"
    expected = {
        "consumer": MetricsConfig().port,
        "ab-consumer": MetricsConfig().port,
        "model-server": ServerConfig().port,
    }
    for name, port in expected.items():
        service = services[name]
        assert port in _published(service)
        assert f":{port}/readyz" in " ".join(service["healthcheck"]["test"])
        dockerfile = _dockerfile(service, services)
        assert dockerfile is not None
        assert ("EXPOSE", str(port)) in _instructions(dockerfile)


def test_depends_on_conditions_are_meaningful(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for dependency, spec in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            target = services[dependency]
            if spec["condition"] == "service_healthy":
                dockerfile = _dockerfile(target, services)
                has_check = "healthcheck" in target or (
                    dockerfile is not None and any(w == "HEALTHCHECK" for w, _ in _instructions(dockerfile))
                )
                assert has_check, f"{name} waits for {dependency} to be healthy but it has no healthcheck"
            elif spec["condition"] == "service_completed_successfully":
                assert "restart" not in target, f"{dependency} is a one-shot job; it must not restart"
                assert "healthcheck" not in target
    for name, service in services.items():
        if "restart" in service:
            assert "healthcheck" in service, f"long-running {name} has no healthcheck"


def test_prometheus_scrapes_every_metrics_endpoint(services: dict[str, dict[str, Any]]) -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    exposing = set()
    for name, service in services.items():
        argv = _argv(service, _dockerfile(service, services))
        if "--metrics-port" in argv:
            exposing.add(f"{name}:{argv[argv.index('--metrics-port') + 1]}")
        if argv[:1] == ["serve"] or argv[:2] == ["thimble-modelops", "serve"]:
            exposing.add(f"{name}:{argv[argv.index('--port') + 1]}")
    assert exposing
    assert exposing <= targets
    volumes = services["prometheus"]["volumes"]
    assert any(v.startswith("./integration/compose/prometheus.yml:") for v in volumes)


def test_containers_reach_kafka_and_redis_by_service_name(services: dict[str, dict[str, Any]]) -> None:
    environment = services["kafka"]["environment"]
    advertised = {entry.split("://")[1] for entry in environment["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    for name, service in services.items():
        env = service.get("environment", {})
        if not OWN_IMAGE.match(service.get("image", "")):
            continue
        assert env["THIMBLE_KAFKA__BOOTSTRAP_SERVERS"] in advertised, name
        assert env["THIMBLE_KAFKA__BOOTSTRAP_SERVERS"].split(":")[0] == "kafka", name
        assert env["THIMBLE_ONLINE_STORE__URL"].startswith("redis://redis:"), name


def test_every_image_is_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = service["image"]
        assert ":" in image, f"{name}: pin {image}"
        assert not image.endswith(":latest"), name


def _env(dockerfile: Path) -> dict[str, str]:
    """The ``ENV`` settings of a Dockerfile (``KEY=value`` pairs)."""
    out: dict[str, str] = {}
    for word, args in _instructions(dockerfile):
        if word == "ENV":
            for pair in args.split():
                key, sep, value = pair.partition("=")
                if sep:
                    out[key] = value
    return out


def test_the_images_share_the_landing_area_the_warehouse_and_the_registry(
    services: dict[str, dict[str, Any]],
) -> None:
    env = {p: _env(REPO / "packages" / p / "Dockerfile") for p in ("consumer", "etl", "modelops")}
    assert env["consumer"]["THIMBLE_WAREHOUSE__LANDING"] == env["etl"]["THIMBLE_WAREHOUSE__LANDING"]
    assert env["etl"]["THIMBLE_MODELOPS__REGISTRY"] == env["modelops"]["THIMBLE_MODELOPS__REGISTRY"]
    shared = {"consumer", "ab-consumer", "etl", "model-server"}
    for name in shared:
        assert "thimble-data:/data" in services[name]["volumes"], name
    for path in (env["etl"]["THIMBLE_WAREHOUSE__LANDING"], env["etl"]["THIMBLE_MODELOPS__REGISTRY"]):
        assert path.startswith("/data/")


def _module_imports(module: str, seen: set[str] | None = None) -> set[str]:
    """Thimble packages a flow module needs at import time: its top-level imports, followed through the flow."""
    import ast

    seen = set() if seen is None else seen
    if module in seen:
        return set()
    seen.add(module)
    path = REPO / Path(*module.split("."))
    source = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    needed: set[str] = set()
    for node in ast.parse(source.read_text()).body:
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        for name in names:
            if name.startswith("thimble."):
                needed.add(name.split(".")[1])
            elif name.startswith("integration.flow"):
                needed |= _module_imports(name, seen)
    return needed


def test_every_image_installs_the_packages_its_flow_entry_point_imports(
    services: dict[str, dict[str, Any]],
) -> None:
    checked = 0
    for name, service in services.items():
        entrypoint = service.get("entrypoint") or []
        if entrypoint[:2] != ["python", "-m"]:
            continue
        dockerfile = _dockerfile(service, services)
        assert dockerfile is not None
        installed = {_package(spec) for spec in _installed_specs(dockerfile)}
        missing = _module_imports(entrypoint[2]) - installed
        assert not missing, f"{name}: {entrypoint[2]} imports thimble packages its image lacks: {missing}"
        checked += 1
    assert checked >= 2


def _final_stage(dockerfile: Path) -> list[tuple[str, str]]:
    instructions = _instructions(dockerfile)
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def _shell_words(run: str, after: str) -> list[str]:
    """The words of a RUN line after ``after``, up to the first shell operator."""
    words = shlex.split(run.split(after, 1)[1])
    operators = [i for i, word in enumerate(words) if word in (">", "&&", "|", ";")]
    return words[: operators[0]] if operators else words


def _requirements_specs(dockerfile: Path) -> list[str]:
    runs = [
        args for word, args in _final_stage(dockerfile) if word == "RUN" and "image_requirements.py" in args
    ]
    assert len(runs) == 1, f"{dockerfile}: one RUN reads the dependencies from the packages' metadata"
    return _shell_words(runs[0], "image_requirements.py")


def _installed_specs(dockerfile: Path) -> list[str]:
    runs = [
        args for word, args in _final_stage(dockerfile) if word == "RUN" and "pip install --no-deps" in args
    ]
    assert len(runs) == 1, f"{dockerfile}: one RUN installs the packages without their dependencies"
    return [w for w in _shell_words(runs[0], "pip install") if not w.startswith("-")]


def _package(spec: str) -> str:
    """``/src/common[spark]`` -> ``common``."""
    match = re.fullmatch(r"/src/(\w+)(?:\[[\w,]+\])?", spec)
    assert match is not None, f"not a package folder: {spec}"
    return match.group(1)


@pytest.mark.parametrize("image", IMAGES)
def test_each_image_installs_its_dependencies_in_a_layer_before_its_sources(image: str) -> None:
    dockerfile = REPO / "packages" / image / "Dockerfile"
    stage = _final_stage(dockerfile)
    specs = _requirements_specs(dockerfile)
    # The packages are installed exactly as their dependencies were read: same folders, same extras.
    assert _installed_specs(dockerfile) == specs
    packages = [_package(spec) for spec in specs]
    deps_run = next(i for i, (w, a) in enumerate(stage) if w == "RUN" and "image_requirements.py" in a)
    install_run = next(i for i, (w, a) in enumerate(stage) if w == "RUN" and "--no-deps" in a)
    copied_before = [a.split()[0] for w, a in stage[:deps_run] if w == "COPY"]
    # Only the metadata reaches the dependency layer, so a change of source leaves it cached.
    assert sorted(copied_before) == sorted(
        ["integration/compose/image_requirements.py"] + [f"packages/{p}/pyproject.toml" for p in packages]
    )
    sources = [
        i
        for i, (w, a) in enumerate(stage)
        if w == "COPY" and a.split()[0] in {f"packages/{p}" for p in packages}
    ]
    assert len(sources) == len(packages)
    assert deps_run < min(sources)
    assert max(sources) < install_run
    assert "pip install -r /src/requirements.txt" in stage[deps_run][1]
    # pip check fails the build when the dependency layer missed a requirement of an installed package.
    assert "pip check" in stage[install_run][1]
    for word, args in stage:
        if word == "RUN" and "pip install" in args and "/src/" in args.split("pip install", 1)[1]:
            assert "--no-deps" in args or "-r /src/requirements.txt" in args, f"{dockerfile}: {args}"


def _reference_requirements(specs: list[str]) -> set[str]:
    """Third-party distributions the given workspace packages need, from their installed metadata."""
    wanted = [(f"thimble-{_package(s)}", set(re.findall(r"\w+", s.partition("[")[2]))) for s in specs]
    given = {name for name, _ in wanted}
    out: set[str] = set()
    seen: set[tuple[str, str]] = set()
    while wanted:
        name, extras = wanted.pop()
        for text in importlib.metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker and not any(
                requirement.marker.evaluate({"extra": extra}) for extra in extras or {""}
            ):
                continue
            other = image_requirements.canonical(requirement.name)
            if other.startswith("thimble-"):
                assert other in given, f"{name} requires {other}, which the image does not install"
                key = (other, ",".join(sorted(requirement.extras)))
                if key not in seen:
                    seen.add(key)
                    wanted.append((other, set(requirement.extras)))
            else:
                out.add(other)
    return out


@pytest.mark.parametrize("image", IMAGES)
def test_the_dependency_layer_holds_every_requirement_of_the_packages_installed(image: str) -> None:
    specs = _requirements_specs(REPO / "packages" / image / "Dockerfile")
    folders = [spec.replace("/src/", f"{REPO}/packages/", 1) for spec in specs]
    read = image_requirements.requirements(folders)
    names = {image_requirements.split(r)[0] for r in read}
    assert names - {"hatchling"} == _reference_requirements(specs)
    assert "hatchling>=1.26" in read
    assert not any(name.startswith("thimble-") for name in names)


def _project(folder: Path, name: str, needs: list[str], extras: dict[str, list[str]] | None = None) -> str:
    folder.mkdir()
    optional = "".join(f"{extra} = {json.dumps(reqs)}\n" for extra, reqs in (extras or {}).items())
    (folder / "pyproject.toml").write_text(
        f'[build-system]\nrequires = ["backend>=1"]\n\n[project]\nname = "{name}"\n'
        f"dependencies = {json.dumps(needs)}\n\n[project.optional-dependencies]\n{optional}"
    )
    return str(folder)


def test_image_requirements_follow_extras_through_the_given_packages_only(tmp_path: Path) -> None:
    a = _project(tmp_path / "a", "thimble-a", ["x>=1", "thimble_B[Fast]>=0.1"])
    b = _project(tmp_path / "b", "thimble-b", ["y"], {"fast": ["z[extra]==2", "thimble-c"], "slow": ["s"]})
    c = _project(tmp_path / "c", "thimble-c", ["w; python_version >= '3'", "x>=1"])
    read = image_requirements.requirements([a, b, c])
    assert sorted(read) == sorted(["backend>=1", "x>=1", "y", "z[extra]==2", "w; python_version >= '3'"])
    assert "s" in image_requirements.requirements([a, f"{b}[slow]", c])
    with pytest.raises(ValueError, match="thimble-b has no extra \\[nope\\]"):
        image_requirements.requirements([a, f"{b}[nope]", c])
    done = subprocess.run(
        [sys.executable, str(REQUIREMENTS_SCRIPT), a, b], capture_output=True, text=True, check=False
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "image_requirements.py: thimble-b requires thimble-c, which is not among the packages given"
    ]
