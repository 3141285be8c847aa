"""``thimble-consumer``: run an app, inspect it, and work with its topics and dead letters."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, Producer, TopicPartition
from confluent_kafka.admin._metadata import ClusterMetadata
from rich.table import Table

from thimble.common.cli import TerminalConsole, user_errors
from thimble.common.config import CONFIG_ENV_VAR, check_topic_name, load_settings
from thimble.common.logging import configure_logging
from thimble.common.validation import json_kind
from thimble.consumer import _log_context as log_context
from thimble.consumer.__about__ import __version__
from thimble.consumer._describe import describe_app
from thimble.consumer._dlq_replay import replay
from thimble.consumer._kafka import (
    admin_client,
    ensure_topics,
    kafka_client,
    kafka_log,
    producer_config,
    wait_for_broker,
)
from thimble.consumer._lag import group_lag
from thimble.consumer._loader import load_app
from thimble.consumer._runner import Runner
from thimble.consumer._supervisor import run_workers
from thimble.consumer._tail import record_line
from thimble.consumer.config import ConsumerSettings
from thimble.consumer.errors import ConsumerError, DeliveryError, ServiceUnavailableError

app = typer.Typer(
    name="thimble-consumer",
    help="Run typed Kafka handlers in production: commits, retries, dead letters, sinks, metrics.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
dlq_app = typer.Typer(help="Dead-letter topics.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
# What is printed holds names from apps and topics (`dict[str, Any]`, a record's topic): printed as
# written, never read as rich markup or emoji codes.
out = TerminalConsole(markup=False, emoji=False)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config file (else $THIMBLE_CONFIG).")
]
BootstrapOpt = Annotated[
    str | None,
    typer.Option("--bootstrap-servers", "-b", help="Kafka bootstrap servers (overrides the config)."),
]


def _settings(config: Path | None, bootstrap: str | None, **consumer: Any) -> ConsumerSettings:
    return load_settings(
        ConsumerSettings,
        config,
        {"kafka": {"bootstrap_servers": bootstrap}, "consumer": consumer},
    )


def _topic(name: str, what: str = "topic") -> str:
    """``name`` when Kafka takes it as a topic name; else a one-line error, before any broker is asked."""
    try:
        return check_topic_name(name)
    except ValueError as exc:
        raise ConsumerError(f"{what}: {exc}") from None


def _check_broker(settings: ConsumerSettings) -> ClusterMetadata:
    """The cluster's metadata; :class:`ServiceUnavailableError` when Kafka does not answer twice."""
    metadata = wait_for_broker(
        admin_client(settings), settings.kafka.bootstrap_servers, lambda _s: False, 2.0, attempts=2
    )
    assert metadata is not None  # never stopped
    return metadata


@app.command()
@user_errors
def run(
    app_path: Annotated[str, typer.Argument(help="The app, as module:attr (e.g. features:app).")],
    workers: Annotated[
        int, typer.Option("--workers", "-w", min=1, help="Processes in the consumer group.")
    ] = 1,
    config: ConfigOpt = None,
    bootstrap_servers: BootstrapOpt = None,
    group_id: Annotated[str | None, typer.Option(help="Consumer group (default: the app's name).")] = None,
    create_topics: Annotated[
        bool | None, typer.Option("--create-topics/--no-create-topics", help="Create missing topics.")
    ] = None,
    exactly_once: Annotated[
        bool | None, typer.Option("--exactly-once/--at-least-once", help="Delivery guarantee.")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Port of /metrics, /healthz, /readyz (worker i: port+i).")
    ] = None,
) -> None:
    """Consume until SIGTERM/SIGINT, then drain, commit and exit 0."""
    overrides = {
        "kafka": {"bootstrap_servers": bootstrap_servers},
        "consumer": {"group_id": group_id, "create_topics": create_topics, "exactly_once": exactly_once},
        "metrics": {"port": metrics_port},
    }
    settings = load_settings(ConsumerSettings, config, overrides)
    _share_with_user_code(config, bootstrap_servers)
    configure_logging("consumer", __version__, settings.logging.level, settings.logging.format)
    application = load_app(app_path)
    if not application.handlers:
        raise ConsumerError(f"app {app_path} has no handler; add one with @app.handler(source=...)")
    if workers > 1:
        raise typer.Exit(run_workers(app_path, workers, config, overrides, settings.consumer.drain_timeout_s))
    log_context.tag_worker(0)
    raise typer.Exit(Runner(application, settings).run())


def _share_with_user_code(config: Path | None, bootstrap_servers: str | None) -> None:
    """Every later settings load in this process and its workers (the user's own, at import time
    included) reads the same config file and broker as the consumer."""
    if config is not None:
        os.environ[CONFIG_ENV_VAR] = str(config.resolve())
    if bootstrap_servers is not None:
        os.environ["THIMBLE_KAFKA__BOOTSTRAP_SERVERS"] = bootstrap_servers


@app.command()
@user_errors
def describe(
    app_path: Annotated[str, typer.Argument(help="The app, as module:attr.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (handlers, topics, schemas).")] = False,
    config: ConfigOpt = None,
) -> None:
    """Show an app's handlers, topics, sinks and message schemas."""
    settings = _settings(config, None)
    info = describe_app(load_app(app_path), settings)
    if as_json:
        sys.stdout.write(orjson.dumps(info, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    table = Table(title=f"app {info['app']} (group {info['group_id']})")
    for col in ("handler", "sources", "input", "batch", "sinks", "dead letters", "defined at"):
        table.add_column(col)
    for h in info["handlers"]:
        table.add_row(
            h["name"],
            ", ".join(h["sources"]),
            h["input"],
            "yes" if h["batch"] else "no",
            ", ".join(f"{s['kind']}:{s['name']}" for s in h["sinks"]) or "-",
            ", ".join(h["dead_letter_topics"]),
            h["where"],
        )
    out.print(table)


@app.command()
@user_errors
def produce(
    topic: Annotated[str, typer.Argument(help="Topic to write to.")],
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="JSON lines file (default: stdin).")
    ] = None,
    key_field: Annotated[
        str | None, typer.Option(help="Use this field of each object as the record key.")
    ] = None,
    raw: Annotated[
        bool,
        typer.Option(
            "--raw", help="Send each line's bytes as they are, unchecked (malformed records included)."
        ),
    ] = False,
    create_topics: Annotated[
        bool, typer.Option("--create-topics/--no-create-topics", help="Create the topic if it is missing.")
    ] = False,
    config: ConfigOpt = None,
    bootstrap_servers: BootstrapOpt = None,
) -> None:
    """Produce one record per non-blank line: JSON lines (validated first), or any bytes with --raw."""
    _topic(topic)
    if raw and key_field is not None:
        raise ConsumerError("--key-field reads a JSON field; it cannot be used with --raw")
    try:
        data = file.read_bytes() if file is not None else sys.stdin.buffer.read()
    except OSError as exc:
        raise ConsumerError(f"cannot read {file}: {exc.strerror or exc}") from None
    records = records_from_lines(data, raw=raw, key_field=key_field)
    settings = _settings(config, bootstrap_servers)
    metadata = _check_broker(settings)
    cfg = settings.consumer
    ensure_topics(
        admin_client(settings),
        metadata,
        [topic],
        create_topics,
        cfg.topic_partitions,
        cfg.topic_replication,
        attempts=2,
    )
    producer = kafka_client(
        Producer, producer_config(settings, "thimble-consumer-produce"), settings, "producer_extra"
    )
    failures: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(err.str())

    for key, value in records:
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.1)
    if producer.flush(60) or failures:
        raise ServiceUnavailableError(f"{len(failures) or 'some'} record(s) not acknowledged: {failures[:1]}")
    out.print(f"produced {len(records)} record(s) to {topic}")


def records_from_lines(
    data: bytes, *, raw: bool = False, key_field: str | None = None
) -> list[tuple[bytes | None, bytes]]:
    """``(key, value)`` of each non-blank line: checked JSON, or the line's bytes as they are with ``raw``."""
    records: list[tuple[bytes | None, bytes]] = []
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        if raw:
            records.append((None, line))
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ConsumerError(
                f"line {number}: not valid JSON ({exc}); pass --raw to send lines unchecked"
            ) from None
        key = None
        if key_field is not None:
            if not isinstance(value, dict) or key_field not in value:
                raise ConsumerError(f"line {number}: no field {key_field!r} for the key")
            key = _field_key(value[key_field], key_field, number)
        records.append((key, line.strip()))
    return records


def _field_key(value: Any, field: str, number: int) -> bytes:
    """A key field's value as the record key: a string as it is, a number as its JSON text; a null, a
    bool, an object or an array is refused (its Python spelling, ``None`` or ``{'a': 1}``, is no key)."""
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value).encode()
    raise ConsumerError(
        f"line {number}: key field {field!r} is {json_kind(value)}; a key is a string or a number"
    )


@app.command()
@user_errors
def tail(
    topic: Annotated[str, typer.Argument(help="Topic to read.")],
    from_beginning: Annotated[bool, typer.Option(help="Start at the oldest record, not the newest.")] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="Stop after this many records.")] = None,
    timeout: Annotated[float | None, typer.Option(min=0, help="Stop after this many idle seconds.")] = None,
    config: ConfigOpt = None,
    bootstrap_servers: BootstrapOpt = None,
) -> None:
    """Print records as JSON lines (partition, offset, key, headers, value), without joining a group.

    Headers are listed in order, duplicates included; bytes that are not UTF-8 are shown in base64
    (``key_base64``, ``value_base64``); characters a terminal would act on are written as JSON escapes.
    """
    _topic(topic)
    settings = _settings(config, bootstrap_servers)
    _check_broker(settings)
    consumer = kafka_client(
        Consumer,
        {
            **settings.kafka.client_config(),
            "group.id": "thimble-tail",
            "enable.auto.commit": False,
            "logger": kafka_log,
        },
        settings,
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            raise ConsumerError(f"topic {topic!r} does not exist")
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END
        consumer.assign([TopicPartition(topic, p, start) for p in meta.partitions])
        seen, idle_since = 0, time.monotonic()
        while limit is None or seen < limit:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                if timeout is not None and time.monotonic() - idle_since >= timeout:
                    break
                continue
            idle_since = time.monotonic()
            seen += 1
            sys.stdout.write(record_line(msg) + "\n")
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()


@app.command()
@user_errors
def lag(
    app_path: Annotated[str, typer.Argument(help="The app, as module:attr.")],
    config: ConfigOpt = None,
    bootstrap_servers: BootstrapOpt = None,
    group_id: Annotated[str | None, typer.Option(help="Consumer group (default: the app's).")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON: group, partitions (committed, end, lag), total_lag.")
    ] = False,
) -> None:
    """Committed offset, end offset and lag of the app's group on each source partition."""
    settings = _settings(config, bootstrap_servers)
    _check_broker(settings)
    application = load_app(app_path)
    group = group_id or settings.consumer.group_id or application.name
    rows = group_lag(settings, group, application.sources)
    total = sum(r.lag for r in rows)
    if as_json:
        doc = {"group": group, "partitions": [r.as_dict() for r in rows], "total_lag": total}
        sys.stdout.write(orjson.dumps(doc).decode() + "\n")
        return
    table = Table(title=f"group {group}")
    for col in ("topic", "partition", "committed", "end", "lag"):
        table.add_column(col, justify="right" if col != "topic" else "left")
    for r in rows:
        table.add_row(
            r.topic,
            str(r.partition),
            "-" if r.committed is None else str(r.committed),
            str(r.high),
            str(r.lag),
        )
    out.print(table)
    out.print(f"total lag: {total}")


@dlq_app.command("replay")
@user_errors
def dlq_replay(
    dlq_topic: Annotated[str, typer.Argument(help="Dead-letter topic, e.g. client-events.dlq.")],
    to: Annotated[
        str | None, typer.Option(help="Send to this topic instead of each record's original topic.")
    ] = None,
    error_class: Annotated[
        str | None, typer.Option(help="Only dead letters whose error class contains this.")
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Replay at most this many.")] = None,
    dry_run: Annotated[bool, typer.Option(help="Count what would be replayed; produce nothing.")] = False,
    config: ConfigOpt = None,
    bootstrap_servers: BootstrapOpt = None,
) -> None:
    """Re-feed dead letters to the topics they came from (progress is committed; replays don't repeat).

    A dead letter that cannot be replayed (its topic is invalid or missing, or the broker refuses it)
    stays, with the dead letters behind it in its partition, for a later replay; the command exits 1.
    """
    _topic(dlq_topic, "the dead-letter topic")
    if to is not None:
        _topic(to, "--to")
    settings = _settings(config, bootstrap_servers)
    _check_broker(settings)
    report = replay(settings, dlq_topic, to=to, error_class=error_class, limit=limit, dry_run=dry_run)
    verb = "would replay" if dry_run else "replayed"
    targets = ", ".join(f"{t}: {n}" for t, n in sorted(report.by_topic.items())) or "nothing"
    failed = f"; not replayed {report.failed}" if report.failed else ""
    failed += f"; passed over {report.cut} cut" if report.cut else ""
    out.print(f"{verb} {report.replayed} dead letter(s) ({targets}); skipped {report.skipped}{failed}")
    if report.failures:
        more = len(report.failures) - 1
        raise DeliveryError(
            report.failures[0]
            + (f" (and {more} more)" if more else "")
            + "; it stays, with the dead letters behind it in its partition, for a later replay"
        )


@app.command()
def version() -> None:
    """Print the version."""
    out.print(__version__)
