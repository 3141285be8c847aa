"""``thimble-modelops``: save, list, show, alias, alias-history, serve, batch, stream, prediction-table, dashboard, skew, lineage."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from thimble.common.cli import TerminalConsole, user_errors
from thimble.common.logging import configure_logging
from thimble.modelops.__about__ import __version__
from thimble.modelops._import_path import import_object
from thimble.modelops._names import error_text
from thimble.modelops.config import OVERRIDES_ENV, ModelOpsSettings, load_modelops_settings
from thimble.modelops.envelope import ModelFunction, TrainingData
from thimble.modelops.errors import (
    BrokenEntryError,
    ModelOpsError,
    PredictionError,
    SchemaMismatchError,
    SignatureError,
)
from thimble.modelops.registry import ModelRef, Registry

app = typer.Typer(
    help="Thimble model operations: a model is a typed function plus its context.",
    no_args_is_help=True,
    add_completion=False,
)


# Every value printed comes from outside (a registry, an envelope, a flag) and may hold rich markup
# (`[/]`, `[red]`): markup is only ever in this module's literal text, each value goes through escape().
out = TerminalConsole(emoji=False)  # an envelope or alias history may be written by anyone with the registry
AUTH_TOKEN_ENV = "THIMBLE_MODELOPS_AUTH_TOKEN"


ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML settings file (else THIMBLE_CONFIG)")]
RegistryOpt = Annotated[
    str | None, typer.Option("--registry", help="registry folder or fsspec URL (else modelops.registry)")
]


def _settings(
    config: Path | None, registry: str | None, extra: dict[str, Any] | None = None
) -> ModelOpsSettings:
    _user_code_on_path()
    overrides: dict[str, Any] = {"modelops": {"registry": registry, **(extra or {})}}
    settings = load_modelops_settings(config, overrides)
    configure_logging("modelops", __version__, settings.logging.level, settings.logging.format)
    return settings


def _user_code_on_path() -> None:
    """Import the user's code from the current folder, as ``thimble-consumer run`` does.

    Models saved by import path (``churn.model:predict``) load in this process, in the server's workers
    and in Spark's Python workers (through ``PYTHONPATH``).
    """
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if cwd not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([cwd, *filter(None, paths)])


def _registry(settings: ModelOpsSettings) -> Registry:
    return Registry.from_config(settings.modelops)


def _pairs(values: list[str], what: str) -> dict[str, str]:
    result = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ModelOpsError(f"{what} {item!r}: expected key=value")
        result[key] = value
    return result


def _import_model(path: str) -> ModelFunction:
    if ":" not in path:
        raise ModelOpsError(f"{path!r}: give the model as module:function, e.g. churn.model:predict")
    try:
        target = import_object(path)
    except (ImportError, AttributeError) as exc:
        raise ModelOpsError(f"cannot import {path}: {error_text(exc, 300)}") from None
    if not isinstance(target, ModelFunction):
        raise ModelOpsError(f"{path} is not an @model function")
    return target


def _read_sample(path: Path) -> Any:
    import pandas as pd

    if not path.exists():
        raise ModelOpsError(f"--sample {path}: the file does not exist")
    if path.is_dir():
        raise ModelOpsError(f"--sample {path}: is a folder; give a .json, .csv or .parquet file")
    kind = {".parquet": "Parquet", ".csv": "CSV"}.get(path.suffix, "JSON")
    try:
        if kind == "Parquet":
            return pd.read_parquet(path)
        if kind == "CSV":
            return pd.read_csv(path)
        return json.loads(path.read_text(encoding="utf-8"))
    except Exception as exc:  # whatever the reader raises on a file it cannot parse
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
        raise ModelOpsError(
            f"--sample {path}: cannot read it as {kind} ({type(exc).__name__}: {first})"
        ) from None


@app.command()
@user_errors
def save(
    function: Annotated[str, typer.Argument(help="the @model function as module:function")],
    artifact: Annotated[
        list[str], typer.Option("--artifact", "-a", help="name=file (joblib or pickle file)")
    ] = [],  # noqa: B006
    training_data: Annotated[
        str | None, typer.Option(help="table@v<version>, e.g. warehouse.client_features@v12")
    ] = None,
    metric: Annotated[list[str], typer.Option("--metric", "-m", help="name=value training metric")] = [],  # noqa: B006
    alias: Annotated[list[str], typer.Option("--alias", help="alias to point at the new version")] = [],  # noqa: B006
    sample: Annotated[
        Path | None, typer.Option(help="training inputs (.json, .csv, .parquet): the drift baseline")
    ] = None,
    registry: RegistryOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Save a new version of a model with its artifacts and context."""
    import joblib

    if training_data is not None:
        TrainingData.parse(training_data, "--training-data")  # said before anything is imported or read
    settings = _settings(config, registry)
    fn = _import_model(function)
    artifacts: dict[str, Any] = {}
    for name, file in _pairs(artifact, "--artifact").items():
        if not Path(file).exists():
            raise ModelOpsError(f"artifact {name!r}: file {file} does not exist")
        try:
            artifacts[name] = joblib.load(file)
        except Exception as exc:
            raise ModelOpsError(f"artifact {name!r}: cannot load {file}: {error_text(exc, 300)}") from None
    metrics = {}
    for k, v in _pairs(metric, "--metric").items():
        try:
            metrics[k] = float(v)
        except ValueError:
            raise ModelOpsError(f"--metric {k}={v}: the value must be a number") from None
    try:
        info = _registry(settings).save(
            fn,
            artifacts=artifacts,
            training_data=training_data,
            metrics=metrics,
            sample=_read_sample(sample) if sample else None,
            aliases=alias,
        )
    except (SchemaMismatchError, PredictionError) as exc:  # the sample's rows: validated, then run
        if sample is None:
            raise
        raise ModelOpsError(f"--sample {sample}: {exc}") from None
    out.print(
        f"saved [bold]{escape(info.ref)}[/] in {escape(settings.modelops.registry)}"
        + (f" (aliases: {escape(', '.join(alias))})" if alias else "")
    )


@app.command("list")
@user_errors
def list_models(registry: RegistryOpt = None, config: ConfigOpt = None) -> None:
    """List models, their versions and aliases."""
    reg = _registry(_settings(config, registry))
    models = reg.models()
    if not models:
        out.print(f"no models in {escape(reg.url)}")
        return
    table = Table("model", "versions", "latest", "aliases", "saved", "training data")
    problems = []
    for m in models:
        problems += m.problems
        saved, training = "", ""
        if m.versions:
            try:
                info = reg.info(ModelRef(m.name, str(m.versions[-1])))
                saved = escape(info.context.created_at[:19])
                training = escape(str(info.context.training_data or ""))
            except BrokenEntryError as exc:
                problems.append(str(exc))
                saved = "[red]broken[/]"
        table.add_row(
            escape(m.name),
            str(len(m.versions)),
            str(m.versions[-1]) if m.versions else "-",
            escape(", ".join(f"{a} -> {v}" for a, v in m.aliases.items()))
            + (" [red](broken entries)[/]" if m.problems else ""),
            saved,
            training,
        )
    out.print(table)
    for problem in problems:
        out.print(f"[red]broken:[/] {escape(problem)}", highlight=False, soft_wrap=True)


@app.command()
@user_errors
def show(
    ref: Annotated[str, typer.Argument(help="name, name@alias or name@version")],
    registry: RegistryOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Show a model version: schemas, features, artifacts, context, environment differences."""
    from thimble.modelops import _environment

    reg = _registry(_settings(config, registry))
    info = reg.info(ref)
    summary = reg.summary(info.name)
    aliases = [a for a, v in summary.aliases.items() if v == info.version]
    ctx = info.context
    out.print(
        f"[bold]{escape(info.ref)}[/]"
        + (f"  aliases: {escape(', '.join(aliases))}" if aliases else "")
        + (f"\n{escape(info.description)}" if info.description else "")
    )
    function = info.function.import_path or f"pickled ({info.function.pickle_file})"
    out.print(escape(f"function: {function}  flavor: {info.flavor}"))
    out.print(
        escape(
            f"saved {ctx.created_at} by {ctx.user}@{ctx.host}, git {ctx.git_commit or '-'}, Python {ctx.python}"
        )
    )
    metrics = ", ".join(f"{k}={v:g}" for k, v in ctx.metrics.items()) or "-"
    out.print(escape(f"training data: {ctx.training_data or '-'}   metrics: {metrics}"))
    for title, schema in (("input", info.input_schema), ("output", info.output_schema)):
        required = set(schema.get("required", []))
        fields = ", ".join(
            f"{k}: {v.get('type', 'any')}{'' if k in required else '?'}"
            for k, v in schema.get("properties", {}).items()
        )
        out.print(escape(f"{title}: {fields}"))
    if info.features:
        f = info.features
        out.print(
            escape(
                f"features: {f.feature_set} by {f.entity_key} -> {', '.join(f.fields)}"
                + (f" (defaults: {f.defaults})" if f.defaults else "")
            )
        )
    for key, art in info.artifacts.items():
        out.print(escape(f"artifact {key}: {art.type} ({art.bytes} bytes, {art.format})"))
    out.print(f"sample: {info.sample_rows} rows")
    if reg.signer is not None:
        try:
            reg.check_signature(info.ref)
            out.print("signature: verified")
        except SignatureError as exc:
            out.print(f"[red]signature:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    problems = _environment.compare(ctx.python, ctx.packages)
    if problems:
        out.print("[yellow]environment differs from the saved one:[/]\n  " + escape("\n  ".join(problems)))
    for problem in summary.problems:
        out.print(f"[red]broken:[/] {escape(problem)}", highlight=False, soft_wrap=True)


@app.command()
@user_errors
def alias(
    name: Annotated[str, typer.Argument(help="model name")],
    alias_name: Annotated[str, typer.Argument(metavar="ALIAS", help="alias, e.g. prod")],
    version: Annotated[
        str | None, typer.Argument(help="version number or another alias (omit with --delete)")
    ] = None,
    delete: Annotated[bool, typer.Option("--delete", help="remove the alias")] = False,
    rollback: Annotated[
        bool, typer.Option("--rollback", help="point it back at the version before its last move")
    ] = False,
    registry: RegistryOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Point an alias at a version, roll it back, or delete it; every move is kept in its history."""
    reg = _registry(_settings(config, registry))
    if delete and rollback:
        raise ModelOpsError("give --delete or --rollback, not both")
    if (delete or rollback) and version is not None:
        raise ModelOpsError(f"--{'delete' if delete else 'rollback'} takes no version (got {version!r})")
    if rollback:
        number = reg.rollback(name, alias_name)
        out.print(escape(f"{name}@{alias_name} -> {number} (rolled back)"), highlight=False)
        return
    if delete:
        reg.delete_alias(name, alias_name)
        out.print(escape(f"deleted {name}@{alias_name}"))
        return
    if version is None:
        raise ModelOpsError("give the version (or alias) to point at, or --delete")
    number = reg.set_alias(name, alias_name, version)
    out.print(escape(f"{name}@{alias_name} -> {number}"))


@app.command("alias-history")
@user_errors
def alias_history(
    name: Annotated[str, typer.Argument(help="model name")],
    alias_name: Annotated[str | None, typer.Option("--alias", help="only this alias's moves")] = None,
    registry: RegistryOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Every move of a model's aliases: when, by whom, from which version to which."""
    reg = _registry(_settings(config, registry))
    moves = reg.alias_history(name, alias_name)
    if not moves:
        out.print(escape(f"no alias moves recorded for {name}"), highlight=False)
        return
    table = Table("time", "alias", "action", "from", "to", "by")
    for m in moves:
        cells = (
            m.at[:23],
            m.alias,
            m.action,
            str(m.previous or "-"),
            str(m.version or "-"),
            f"{m.user}@{m.host}",
        )
        table.add_row(*map(escape, cells))
    out.print(table)


@app.command()
@user_errors
def serve(
    refs: Annotated[list[str], typer.Argument(help="models to serve: name, name@alias, name@version")],
    host: Annotated[str | None, typer.Option(help="bind address")] = None,
    port: Annotated[int | None, typer.Option(help="port")] = None,
    workers: Annotated[int | None, typer.Option(help="worker processes (one per core)")] = None,
    max_batch_size: Annotated[int | None, typer.Option(help="most rows per model call")] = None,
    max_wait_ms: Annotated[
        float | None, typer.Option(help="how long a batch waits for more requests")
    ] = None,
    auth_token: Annotated[
        str | None, typer.Option(envvar=AUTH_TOKEN_ENV, help="require this bearer token")
    ] = None,
    prediction_log_topic: Annotated[
        str | None, typer.Option(help="Kafka topic for prediction records")
    ] = None,
    registry: RegistryOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Serve models over HTTP (FastAPI + uvicorn)."""
    import uvicorn

    if auth_token is None and os.environ.get(AUTH_TOKEN_ENV) == "":
        auth_token = ""  # set but empty (an unset variable pasted in): refused, never taken for "no auth"
    server = {
        "models": refs,
        "host": host,
        "port": port,
        "workers": workers,
        "max_batch_size": max_batch_size,
        "max_wait_ms": max_wait_ms,
        "auth_token": auth_token,
        "prediction_log_topic": prediction_log_topic,
    }
    overrides = {"registry": registry, "server": {k: v for k, v in server.items() if v is not None}}
    settings = _settings(config, None, overrides)
    reg = _registry(settings)
    for ref in refs:
        reg.check_signature(ref)
    cfg = settings.modelops.server
    os.environ[OVERRIDES_ENV] = json.dumps({"modelops": overrides})
    if config is not None:
        os.environ["THIMBLE_CONFIG"] = str(config)
    metrics_dir = None
    if cfg.workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        metrics_dir = tempfile.mkdtemp(prefix="thimble-modelops-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    out.print(
        escape(
            f"serving {', '.join(refs)} on http://{cfg.host}:{cfg.port} ({cfg.workers} worker{'s' if cfg.workers > 1 else ''})"
        )
    )
    try:
        uvicorn.run(
            "thimble.modelops.server:app_from_settings",
            factory=True,
            host=cfg.host,
            port=cfg.port,
            workers=cfg.workers,
            loop="uvloop",
            http="httptools",
            access_log=False,
            log_level="warning",
        )
    finally:
        if metrics_dir is not None:
            import shutil

            shutil.rmtree(metrics_dir, ignore_errors=True)


@app.command()
@user_errors
def batch(
    ref: Annotated[str, typer.Argument(help="model: name, name@alias or name@version")],
    input: Annotated[str, typer.Option("--input", help="warehouse table to score")],
    output: Annotated[str, typer.Option("--output", help="Delta table to write")],
    keep: Annotated[
        list[str] | None,
        typer.Option(
            "--keep",
            help="input column copied to the output besides the non-input columns and the entity key (repeat)",
        ),
    ] = None,
    mode: Annotated[str, typer.Option(help="overwrite or append")] = "overwrite",
    input_version: Annotated[int | None, typer.Option(help="score this version of the input table")] = None,
    where: Annotated[
        str | None, typer.Option(help="SQL predicate: score only the input rows it keeps (e.g. is_current)")
    ] = None,
    registry: RegistryOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Score a warehouse table on Spark into a versioned Delta table."""
    from thimble.common.spark import build_spark_session
    from thimble.modelops.batch import run_batch

    settings = _settings(config, registry)
    reg = _registry(settings)
    loaded = reg.load(ref)
    spark = build_spark_session(settings, app_name=f"thimble-modelops-batch-{loaded.name}")
    try:
        result = run_batch(
            spark,
            loaded,
            input,
            output,
            keep=keep or None,
            mode=mode,
            input_version=input_version,
            where=where,
            registry=reg,
            settings=settings,
        )
    finally:
        spark.stop()
    out.print(
        escape(
            f"scored {result.rows} rows of {result.input_table} (v{result.input_version}) with {result.model}@{result.model_version} "
            f"into {result.output_table} v{result.output_version} in {result.seconds:.1f}s"
        )
    )
    if result.rejected:
        reasons = "; ".join(f"{n} {reason}" for reason, n in result.rejected_reasons.items())
        out.print(
            escape(
                f"rejected {result.rejected} rows that are not valid input of {result.model}@"
                f"{result.model_version} (not scored): {reasons}"
            )
        )
    for k, v in sorted(result.metrics.items()):
        if k.startswith(("psi.", "prediction.", "quality.")):
            out.print(escape(f"  {k}: {v:.4g}"))


@app.command()
@user_errors
def stream(
    ref: Annotated[str, typer.Argument(help="model: name, name@alias or name@version")],
    source: Annotated[str, typer.Option(help="Kafka topic of input rows (JSON)")],
    sink: Annotated[str, typer.Option(help="Kafka topic for predictions")],
    group: Annotated[
        str | None, typer.Option(help="consumer group (default thimble-modelops-<model>)")
    ] = None,
    create_topics: Annotated[
        bool | None, typer.Option("--create-topics/--no-create-topics", help="create missing topics")
    ] = None,
    exactly_once: Annotated[
        bool | None, typer.Option("--exactly-once/--at-least-once", help="delivery guarantee")
    ] = None,
    registry: RegistryOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Score a Kafka topic continuously, as a thimble-consumer batch handler; exit 1 if it stops on a failure."""
    from thimble.modelops.stream import run_stream

    settings = _settings(config, registry)
    code = run_stream(
        _registry(settings).load(ref),
        source=source,
        sink=sink,
        group=group,
        settings=settings,
        config_file=config,
        create_topics=create_topics,
        exactly_once=exactly_once,
    )
    if code:
        raise typer.Exit(code)


@app.command()
@user_errors
def dashboard(
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8090,
    registry: RegistryOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Serve the metrics dashboard (charts per model and version)."""
    import uvicorn

    from thimble.modelops.dashboard import create_dashboard

    settings = _settings(config, registry)
    tracker = _registry(settings).tracker()
    out.print(escape(f"dashboard of {tracker.path} on http://{host}:{port}"))
    uvicorn.run(create_dashboard(tracker), host=host, port=port, log_level="warning")


@app.command("prediction-table")
@user_errors
def prediction_table(
    ref: Annotated[str, typer.Argument(help="model: name, name@alias or name@version")],
    topic: Annotated[str, typer.Option("--topic", help="Kafka topic the server logs predictions to")],
    table: Annotated[
        str | None, typer.Option("--table", help="warehouse table (default <model>_prediction_log)")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write the YAML here (default: print it)")
    ] = None,
    registry: RegistryOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Print the thimble-etl table config loading a model's prediction log (run it with thimble-etl run)."""
    import yaml

    from thimble.modelops._prediction_log import prediction_table_config

    loaded = _registry(_settings(config, registry)).load(ref)
    text = yaml.safe_dump(prediction_table_config(loaded, topic, table), sort_keys=False, width=1_000)
    if output is None:
        sys.stdout.write(text)
        return
    try:
        output.write_text(text)
    except OSError as exc:
        raise ModelOpsError(f"cannot write {output}: {exc.strerror or exc}") from None
    out.print(escape(f"wrote the table config of {loaded.ref}'s prediction log to {output}"), highlight=False)


@app.command()
@user_errors
def compare(
    name: Annotated[str, typer.Argument(help="model name")],
    topic: Annotated[str, typer.Option("--topic", help="Kafka topic the server logs predictions to")],
    config: ConfigOpt = None,
) -> None:
    """Compare the versions served live (primary, canary, shadow) from the prediction log."""
    from thimble.modelops.compare import compare as compare_versions
    from thimble.modelops.compare import read_prediction_log, table_rows

    settings = _settings(config, None)
    log = read_prediction_log(settings.kafka.client_config(), topic)
    found = compare_versions(log.records, name)
    stats, skipped = found.versions, log.skipped + found.skipped
    if skipped:
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items()))
        out.print(
            escape(f"skipped {sum(skipped.values())} records on {topic!r} that cannot be read: {reasons}")
        )
    if not stats:
        raise ModelOpsError(f"no prediction records of {name!r} on {topic!r}")
    view = Table("alias", "role", "version", "requests", "p50 ms", "p99 ms", "output mean", "PSI vs primary")
    for row in table_rows(stats):
        view.add_row(*map(escape, row))
    out.print(view)


@app.command("skew")
@user_errors
def skew_check(
    feature_set: Annotated[
        str, typer.Argument(help="feature set: module:attribute of a FeatureSet, or its name")
    ],
    sample: Annotated[int, typer.Option(min=1, help="entities sampled from each side")] = 1000,
    max_skew: Annotated[
        float, typer.Option(min=0, max=1, help="share of skewed entities tolerated before exiting 1")
    ] = 0.0,
    tolerance: Annotated[
        float, typer.Option(min=0, help="relative (and absolute) tolerance of numbers")
    ] = 1e-9,
    entity_key: Annotated[str | None, typer.Option(help="entity key field (a feature set by name)")] = None,
    event_time: Annotated[str | None, typer.Option(help="event time field (a feature set by name)")] = None,
    table: Annotated[str | None, typer.Option(help="journal table (a feature set by name)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    config: ConfigOpt = None,
) -> None:
    """Compare a feature set's online store with its warehouse journal; exit 1 on skew above --max-skew."""
    from thimble.modelops import skew as skew_module

    settings = _settings(config, None)
    target = skew_module.resolve_target(
        feature_set,
        settings.warehouse.database,
        entity_key=entity_key,
        event_time=event_time,
        table=table,
    )
    report = skew_module.skew(target, sample, settings=settings, tolerance=tolerance)
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(), default=str) + "\n")
    else:
        for part in skew_module.render(report):
            out.print(part)  # rich renderables that escape what they show
    if report.share > max_skew:
        raise typer.Exit(1)


@app.command()
@user_errors
def lineage(
    ref: Annotated[str | None, typer.Argument(help="model version: name@alias or name@version")] = None,
    request_id: Annotated[
        str | None, typer.Option("--request-id", help="a served request: its model version and features")
    ] = None,
    topic: Annotated[
        str | None, typer.Option(help="prediction log topic (else modelops.server.prediction_log_topic)")
    ] = None,
    timeout: Annotated[float, typer.Option(min=1, help="seconds to read the topic for")] = 30.0,
    as_json: Annotated[bool, typer.Option("--json", help="print the lineage as JSON")] = False,
    registry: RegistryOpt = None,
    config: ConfigOpt = None,
) -> None:
    """What a model version was trained on (tables, versions, consumer offsets), or what a request used."""
    from thimble.modelops import lineage as lineage_module

    if (ref is None) == (request_id is None):
        raise ModelOpsError("give a model version (name@alias) or --request-id, one of them")
    settings = _settings(config, registry)
    reg = _registry(settings)
    if request_id is not None:
        lineage_module.check_request_id(request_id)
        log_topic = topic or settings.modelops.server.prediction_log_topic
        if not log_topic:
            raise ModelOpsError("give --topic: no modelops.server.prediction_log_topic is configured")
        records = lineage_module.prediction_lineage(
            settings.kafka.client_config(), log_topic, request_id, reg, timeout
        )
        if not records:
            raise ModelOpsError(f"no prediction record of request {request_id!r} on {log_topic!r}")
        data: Any = [r.to_dict() for r in records]
        view = lineage_module.prediction_tree(records)
    else:
        assert ref is not None
        found = lineage_module.model_lineage(reg, ref, settings=settings)
        data, view = found.to_dict(), lineage_module.model_tree(found)
    if as_json:
        sys.stdout.write(json.dumps(data, default=str) + "\n")
    else:
        out.print(view)


@app.command()
def version() -> None:
    """Print the version."""
    out.print(escape(__version__))
