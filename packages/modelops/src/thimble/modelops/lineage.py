"""Lineage: what a model version was trained on, down to Kafka offsets, and what a served prediction used.

:func:`model_lineage` reads a version's envelope — its training set record (feature sets' journal tables
and label table, each at a Delta version), or the training data it names — and, for each table, the
highest consumer offset per topic and partition whose data that table version holds (thimble-etl records
them with each run). :func:`prediction_lineage` finds a request's records on the prediction log topic:
the model version that answered and the input rows it scored, online features filled in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from thimble.modelops._http import REQUEST_ID
from thimble.modelops._topic_records import read_json_records
from thimble.modelops.errors import ModelOpsError
from thimble.modelops.registry import Registry

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from thimble.common.config import ThimbleSettings


@dataclass
class TableLineage:
    """One table a model was trained on, at its version, and the consumer offsets it holds data up to."""

    role: str
    table: str
    version: int | None
    offsets: dict[str, dict[int, int]] = field(default_factory=dict)
    """Topic -> partition -> highest offset loaded."""
    note: str = ""
    upstream: list[TableLineage] = field(default_factory=list)
    """The warehouse table (at the version read) this version was built from, when it was one."""


@dataclass
class ModelLineage:
    """A model version, what it was trained on, and which online features it reads."""

    model: str
    version: int
    aliases: list[str]
    saved_at: str
    training_set: dict[str, Any] | None
    training_data: str | None
    tables: list[TableLineage]
    online_features: dict[str, Any] | None

    @property
    def ref(self) -> str:
        return f"{self.model}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _training_tables(info: Any) -> list[tuple[str, str, int | None]]:
    """(role, table, version) of each table the envelope says the model was trained on."""
    spec = getattr(info.context, "training_set", None)
    if spec is not None:
        record = spec.model_dump(mode="json")
        tables = [
            (f"feature set {fs.get('name') or fs['table']}", fs["table"], fs.get("version"))
            for fs in record.get("feature_sets", [])
        ]
        labels = record.get("labels")
        if labels:
            tables.append(("labels", labels["table"], labels.get("version")))
        return tables
    data = info.context.training_data
    return [("training data", data.table, data.version)] if data is not None else []


def model_lineage(
    registry: Registry,
    ref: str,
    *,
    spark: SparkSession | None = None,
    settings: ThimbleSettings | None = None,
) -> ModelLineage:
    """The lineage of ``ref`` (``name@alias`` or ``name@version``); tables are read on ``spark`` (one is
    built from ``settings`` when needed)."""
    info = registry.info(ref)
    aliases = [a for a, v in registry.aliases(info.name).items() if v == info.version]
    spec = getattr(info.context, "training_set", None)
    tables = [TableLineage(role, table, version) for role, table, version in _training_tables(info)]
    if tables:
        if spark is None:
            from thimble.common.spark import build_spark_session

            if settings is None:
                from thimble.modelops.config import load_modelops_settings

                settings = load_modelops_settings()
            spark = build_spark_session(settings, app_name="thimble-modelops-lineage")
        for entry in tables:
            _fill_offsets(entry, spark, settings)
    return ModelLineage(
        model=info.name,
        version=info.version,
        aliases=sorted(aliases),
        saved_at=info.context.created_at,
        training_set=spec.model_dump(mode="json") if spec is not None else None,
        training_data=str(info.context.training_data) if info.context.training_data else None,
        tables=tables,
        online_features=info.features.model_dump() if info.features is not None else None,
    )


MAX_UPSTREAM = 4
"""How many tables built from tables :func:`model_lineage` follows back."""


def _fill_offsets(
    entry: TableLineage, spark: SparkSession, settings: ThimbleSettings | None, depth: int = 0
) -> None:
    from thimble.etl.errors import EtlError
    from thimble.etl.history import history, loaded_offsets

    try:
        versions = history(entry.table, spark=spark, settings=settings)
    except EtlError as exc:
        entry.note = str(exc)
        return
    if entry.version is None:
        entry.version = versions[0].version if versions else None
        entry.note = "no version recorded: shown at its current version"
    if entry.version is None:
        return
    entry.offsets = loaded_offsets(versions, entry.version)
    read = next((v.source.get("table") for v in versions if v.version <= entry.version), None)
    if not entry.offsets and isinstance(read, dict) and depth < MAX_UPSTREAM:
        source = TableLineage("built from", str(read.get("name")), read.get("version"))
        if isinstance(source.version, int):
            entry.upstream.append(source)
            _fill_offsets(source, spark, settings, depth + 1)
            return
    if not entry.offsets and not entry.note:
        oldest = min((v.version for v in versions), default=None)
        entry.note = (
            "no consumer offsets recorded (not loaded from landed files or Kafka)"
            if oldest is None or oldest <= entry.version
            else f"versions before {oldest} are no longer in the table's log"
        )


# --- a logged prediction ------------------------------------------------------------------------------


@dataclass
class PredictionLineage:
    """One record of a request on the prediction log: who answered, and the rows it scored."""

    request_id: str
    model: str
    version: int | None
    alias: str
    role: str
    time: str
    topic: str
    partition: int
    offset: int
    entity_key: str | None
    feature_set: str | None
    features: list[dict[str, Any]]
    """Per input row: the entity key and the feature values the model used (every input without a
    feature declaration)."""
    outputs: list[Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_request_id(request_id: str) -> str:
    """``request_id`` if it is one the server could have given; a :class:`ModelOpsError` otherwise."""
    if not REQUEST_ID.fullmatch(request_id):
        raise ModelOpsError(
            f"--request-id {request_id[:130]!r} is not a request id: 1-128 letters, digits and ._:@/+=-"
        )
    return request_id


def prediction_lineage(
    kafka_config: dict[str, Any],
    topic: str,
    request_id: str,
    registry: Registry | None = None,
    timeout_s: float = 30.0,
) -> list[PredictionLineage]:
    """Every record of ``request_id`` on ``topic`` (the primary's, and a canary's or shadow's), read
    from the beginning up to the topic's end offsets now, for at most ``timeout_s``.

    With ``registry``, each record's inputs are narrowed to the entity key and the features the model
    version declares.
    """
    check_request_id(request_id)
    out = []
    read = read_json_records(
        kafka_config, topic, group="thimble-lineage", timeout_s=timeout_s, key=request_id.encode()
    )
    if not read.complete:
        raise ModelOpsError(
            f"reading {topic!r} took longer than {timeout_s:g} s; "
            f"{len(read.found)} record(s) of the request found so far"
        )
    for partition, offset, record in read.found:
        if record.get("request_id") != request_id:
            continue
        model, version = str(record.get("model", "")), record.get("version")
        spec = _feature_spec(registry, model, version)
        inputs = [r for r in _listed(record.get("inputs")) if isinstance(r, dict)]
        if spec is not None:
            keep = [spec.entity_key, *spec.fields]
            inputs = [{k: row.get(k) for k in keep} for row in inputs]
        out.append(
            PredictionLineage(
                request_id=request_id,
                model=model,
                version=version if isinstance(version, int) else None,
                alias=str(record.get("alias", "")),
                role=str(record.get("role", "")),
                time=_time_of(record.get("time")),
                topic=topic,
                partition=partition,
                offset=offset,
                entity_key=spec.entity_key if spec is not None else None,
                feature_set=spec.feature_set if spec is not None else None,
                features=inputs,
                outputs=_listed(record.get("outputs")),
            )
        )
    return out


def _listed(value: Any) -> list[Any]:
    """A record's list field; anything else (the log is a topic others can write to) as no items."""
    return value if isinstance(value, list) else []


def _time_of(millis: Any) -> str:
    """A record's ``time`` (epoch milliseconds) as ISO text; ``""`` when it is not a time."""
    if not isinstance(millis, int | float) or isinstance(millis, bool):
        return ""
    try:
        return datetime.fromtimestamp(millis / 1000, UTC).isoformat(timespec="milliseconds")
    except (OverflowError, OSError, ValueError):  # NaN, or out of datetime's years
        return ""


def _feature_spec(registry: Registry | None, model: str, version: Any) -> Any:
    if registry is None or not isinstance(version, int):
        return None
    try:
        return registry.info(f"{model}@{version}").features
    except ModelOpsError:
        return None


# --- showing it ---------------------------------------------------------------------------------------


def model_tree(lineage: ModelLineage) -> Any:
    """A rich tree of a model's lineage."""
    from rich.markup import escape
    from rich.tree import Tree

    aliases = f" ({', '.join(lineage.aliases)})" if lineage.aliases else ""
    tree = Tree(f"[bold]{escape(lineage.ref)}[/]{escape(aliases)}  saved {escape(lineage.saved_at[:19])}")
    spec = lineage.training_set
    if spec is not None:
        branch = tree.add(f"training set, as of column {escape(repr(spec.get('at')))}")
    elif lineage.training_data is not None:
        branch = tree.add("training data")
    else:
        branch = tree.add("[yellow]no training data recorded[/]")
    features = {fs["table"]: fs for fs in (spec or {}).get("feature_sets", [])}
    for entry in lineage.tables:
        node = branch.add(_table_label(entry))
        fs = features.get(entry.table)
        if fs is not None and entry.role.startswith("feature set"):
            node.add(f"by {escape(fs['entity_key'])}: {escape(', '.join(fs['features']))}")
        _table_nodes(node, entry)
    online = lineage.online_features
    if online is not None:
        tree.add(
            f"online features: {escape(online['feature_set'])} by {escape(online['entity_key'])} -> "
            f"{escape(', '.join(online['fields']))}"
        )
    return tree


def _table_label(entry: TableLineage) -> str:
    from rich.markup import escape

    version = f"@v{entry.version}" if entry.version is not None else ""
    return f"{escape(entry.role)}: [bold]{escape(entry.table + version)}[/]"


def _table_nodes(node: Any, entry: TableLineage) -> None:
    """Offsets, note and upstream tables of ``entry`` under ``node``."""
    from rich.markup import escape

    for topic, partitions in sorted(entry.offsets.items()):
        shown = ", ".join(f"[{p}] {o:,}" for p, o in sorted(partitions.items()))
        node.add(f"loaded up to {escape(topic)} {shown}")
    if entry.note:
        node.add(f"[dim]{escape(entry.note)}[/]")
    for source in entry.upstream:
        _table_nodes(node.add(_table_label(source)), source)


def prediction_tree(records: list[PredictionLineage]) -> Any:
    """A rich tree of a request's records: who answered, then a table of the rows scored."""
    from rich.markup import escape
    from rich.table import Table
    from rich.tree import Tree

    tree = Tree(f"request [bold]{escape(records[0].request_id)}[/]")
    for r in records:
        node = tree.add(
            f"{escape(r.model)}@{r.version} as {escape(r.alias)} ({escape(r.role)}) at {escape(r.time)}"
            f"  [dim]{escape(r.topic)}[{r.partition}]@{r.offset}[/]"
        )
        columns = list(dict.fromkeys(k for row in r.features for k in row))
        title = f"features of {r.feature_set}" if r.feature_set else "inputs"
        table = Table(*map(escape, columns), "output", title=escape(title), title_justify="left")
        for row, output in zip(r.features, r.outputs, strict=False):
            cells = [orjson.dumps(row.get(c), default=str).decode() for c in columns]
            table.add_row(*map(escape, cells), escape(orjson.dumps(output, default=str).decode()))
        node.add(table)
    return tree
