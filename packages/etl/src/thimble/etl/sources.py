"""Read a table's source into a DataFrame, remembering what was read so the next run reads only what is new.

Progress (landing files loaded, Kafka offsets consumed) is stored in the metadata of the commit that wrote
the data, so it advances exactly when the table does: a run that writes nothing reads the same data again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from thimble.common.config import ThimbleSettings
from thimble.common.features import LANDING_PARTITION, landing_folder
from thimble.common.logging import get_logger
from thimble.common.validation import did_you_mean
from thimble.etl import _sql, _tables
from thimble.etl._columns import widening_ok
from thimble.etl.config import FilesSource, KafkaSource, LandingSource, SchemaConfig, TableConfig, TableSource
from thimble.etl.errors import ServiceUnavailableError, SourceError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import DataType

log = get_logger(__name__)

KAFKA_COLUMNS = ("_kafka_topic", "_kafka_partition", "_kafka_offset", "_kafka_timestamp")
SOURCE_ERROR = "_source_error"
# JSON as RFC 8259 (and thimble-consumer) reads it; Spark's defaults also accept 'single quotes' and NaN.
STRICT_JSON = {
    "allowSingleQuotes": "false",
    "allowNonNumericNumbers": "false",
    "allowUnquotedFieldNames": "false",
    "allowComments": "false",
    "allowNumericLeadingZeros": "false",
    "allowBackslashEscapingAnyCharacter": "false",
    "allowUnquotedControlChars": "false",
}


@dataclass
class SourceBatch:
    """What one run read: the rows, rows that could not be parsed, and the progress to record."""

    df: DataFrame | None
    progress: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    read: dict[str, Any] = field(default_factory=dict)
    """What was read that is not progress (a source table's version), recorded in the commit beside it."""
    progress_from: int | None = None
    """The table's version the progress was read at (None: no table, or no progress): a load from it is
    committed once, whichever run commits it first."""

    @property
    def empty(self) -> bool:
        return self.df is None


def read_source(
    spark: SparkSession, config: TableConfig, settings: ThimbleSettings, table: str
) -> SourceBatch:
    """Read what is new in ``config.source`` for ``table``; ``df`` is None when there is nothing new.

    Rows that cannot be parsed keep their raw text and carry a reason in ``_source_error``.
    """
    source = config.source
    if isinstance(source, LandingSource):
        batch = _read_landing(spark, source, settings, table)
    elif isinstance(source, KafkaSource):
        batch = _read_kafka(spark, source, config.schema_, settings, table)
    elif isinstance(source, TableSource):
        name = _tables.qualified(source.table, settings)
        if not _tables.exists(spark, name):
            raise SourceError(f"source.table: no table '{name}' in the warehouse")
        batch = _read_table(spark, name)
    else:
        batch = _read_files(spark, source, config.schema_)
    if batch.df is not None and not isinstance(source, KafkaSource):
        batch.df = apply_declared_schema(batch.df, config.schema_)
    return batch


def source_types(
    spark: SparkSession, config: TableConfig, settings: ThimbleSettings
) -> dict[str, str | None]:
    """The columns and types the source gives, after the declared schema (read without loading data)."""
    source = config.source
    if config.schema_.columns and isinstance(source, KafkaSource):
        types: dict[str, str | None] = dict(config.schema_.columns)
        types.update(
            {
                "_kafka_topic": "string",
                "_kafka_partition": "int",
                "_kafka_offset": "bigint",
                "_kafka_timestamp": "timestamp",
            }
        )
        return types
    if isinstance(source, LandingSource):
        files = _landing_files(spark, _landing_root(source, settings))
        if not files:
            raise SourceError(f"source.dataset: no landed files under {_landing_root(source, settings)}")
        df = read_landed(spark, files[-50:])
    elif isinstance(source, TableSource):
        name = _tables.qualified(source.table, settings)
        if not _tables.exists(spark, name):
            raise SourceError(f"source.table: no table '{name}' in the warehouse")
        df = spark.table(name)
    elif isinstance(source, FilesSource):
        files_df = _read_files(spark, source, SchemaConfig()).df
        assert files_df is not None
        df = files_df
    else:
        raise SourceError("source: cannot tell the columns of a kafka source without schema.columns")
    actual = {f.name: f.dataType.simpleString() for f in df.schema.fields}
    problems = declared_schema_problems(actual, config.schema_)
    if problems:
        from thimble.etl.errors import ConfigError

        raise ConfigError(problems)
    if config.schema_.columns:
        return dict(config.schema_.columns)
    return dict(actual)


def declared_schema_problems(actual: dict[str, str], schema: SchemaConfig) -> list[str]:
    """Declared columns that the source lacks, or whose source type would lose values."""
    problems = []
    for name, kind in (schema.columns or {}).items():
        if name not in actual:
            problems.append(
                f"schema.columns.{name}: no column '{name}' in the source{did_you_mean(name, actual)}"
            )
        elif not widening_ok(actual[name], kind) and actual[name] != "string":
            problems.append(f"schema.columns.{name}: declared {kind} but the source has {actual[name]}")
    return problems


def apply_declared_schema(df: DataFrame, schema: SchemaConfig) -> DataFrame:
    """Select the declared columns, cast to the declared types; fail on a missing column."""
    from pyspark.sql import functions as F

    if not schema.columns:
        return df
    actual = {f.name: f.dataType.simpleString() for f in df.schema.fields}
    missing = [name for name in schema.columns if name not in actual]
    if missing:
        raise SourceError(
            "; ".join(
                f"schema.columns.{m}: no column '{m}' in the source{did_you_mean(m, actual)}" for m in missing
            )
        )
    converted = {n: k for n, k in schema.columns.items() if actual[n] != k}
    cols = [
        _sql.col(n).try_cast(converted[n]).alias(n) if n in converted else _sql.col(n) for n in schema.columns
    ]
    # A value that does not convert sends its row to quarantine, never a null into the table.
    errors = [
        F.when(
            _sql.col(n).isNotNull() & _sql.col(n).try_cast(k).isNull(),
            F.lit(f"source: value of '{n}' is not a {k}"),
        )
        for n, k in converted.items()
    ]
    if SOURCE_ERROR in df.columns:
        errors.insert(0, F.col(SOURCE_ERROR))
    if not errors:
        return df.select(*cols)
    return df.select(*cols, F.coalesce(*errors).alias(SOURCE_ERROR))


def _read_table(spark: SparkSession, name: str) -> SourceBatch:
    """A warehouse table at its current version, pinned, so the commit can tell which version was read."""
    version = _tables.version(spark, name)
    if version is None:  # not a Delta table
        return SourceBatch(spark.table(name), {}, f"table {name}")
    df = spark.read.format("delta").option("versionAsOf", version).table(name)
    return SourceBatch(df, {}, f"table {name} v{version}", {"table": {"name": name, "version": version}})


# --- landing area ------------------------------------------------------------------------------------


def _landing_root(source: LandingSource, settings: ThimbleSettings) -> str:
    return landing_folder(settings.warehouse.landing, source.dataset)


def _landing_files(spark: SparkSession, root: str) -> list[str]:
    """Every landed Parquet file under ``root/date=*/`` (temp files starting with '.' or '_' excluded).

    Spark lists them, where it reads them (the server, over Spark Connect): planning a read of the glob
    lists its files and runs no job; the schema is given, so no file is opened.
    """
    from pyspark.errors import AnalysisException

    try:
        listed = (
            spark.read.schema(_ANY_SCHEMA).parquet(f"{root}/{LANDING_PARTITION}=*/*.parquet").inputFiles()
        )
    except AnalysisException:  # nothing matches the pattern
        return []
    files = {hadoop_path(uri) for uri in listed}
    return sorted(f for f in files if not f.rsplit("/", 1)[-1].startswith((".", "_")))


_ANY_SCHEMA = "_thimble_unread string"


def hadoop_path(uri: str) -> str:
    """A file URI as Hadoop spells its path (``file:/a b/c``, ``s3a://bucket/key``): landed files are
    recorded in this form in the table's commits, and must compare equal from one run to the next."""
    parsed = urlsplit(uri)
    if not parsed.scheme:
        return uri
    authority = f"//{parsed.netloc}" if parsed.netloc else ""
    return f"{parsed.scheme}:{authority}{unquote(parsed.path)}"


def _loaded_files(spark: SparkSession, table: str) -> tuple[set[str], int | None]:
    """The landed files the table's commits loaded, and the version they were read at (None: no table)."""
    if not _tables.exists(spark, table):
        return set(), None
    loaded: set[str] = set()
    commits = _tables.commits(spark, table)
    for commit in commits:
        loaded.update(commit["thimble"].get("source", {}).get("files", []))
    return loaded, (commits[0]["version"] if commits else None)


def _read_landing(
    spark: SparkSession, source: LandingSource, settings: ThimbleSettings, table: str
) -> SourceBatch:
    root = _landing_root(source, settings)
    files = _landing_files(spark, root)
    read_at = None
    if source.incremental:
        loaded, read_at = _loaded_files(spark, table)
        files = [f for f in files if f not in loaded]
    description = f"{len(files)} new landed file(s) under {root}"
    if not files:
        return SourceBatch(None, {}, description)
    df = read_landed(spark, files)
    if not source.incremental:
        return SourceBatch(df, {}, description)
    return SourceBatch(df, {"files": files, **landed_offsets(df)}, description, progress_from=read_at)


def read_landed(spark: SparkSession, files: list[str]) -> DataFrame:
    """Landed Parquet files as one frame, their schemas merged.

    Files may disagree on a number field's type: two consumer processes that started on an empty
    dataset at once, one seeing ``10`` first and the other ``10.5``, wrote it as ``bigint`` and as
    ``double``. Such files are read in groups that agree and unioned, the field widened as a union does
    (``double``: exact for integers up to 2**53). Any other disagreement (text in one file, a number in
    another) is a :class:`SourceError` naming the field and a file of each kind.
    """
    from thimble.common.errors import spark_failure

    try:
        df = spark.read.option("mergeSchema", "true").parquet(*files)
        df.schema  # noqa: B018  # over Spark Connect the files' footers are read when the plan is analysed
        return df
    except Exception as exc:
        failure = spark_failure(exc)
        if failure is None or failure.condition not in _SCHEMAS_DISAGREE or len(files) < 2:
            raise
    middle = len(files) // 2
    first, second = read_landed(spark, files[:middle]), read_landed(spark, files[middle:])
    clash = _type_clash(first.schema, second.schema, ())
    if clash is not None:
        path, one, other = clash
        raise SourceError(
            f"the landed files disagree on field {_shown_path(path)!r}: {one.simpleString()} in "
            f"{_file_with(spark, files[:middle], path, one)}, {other.simpleString()} in "
            f"{_file_with(spark, files[middle:], path, other)}"
        )
    return first.unionByName(second, allowMissingColumns=True)


_SCHEMAS_DISAGREE = frozenset({"CANNOT_MERGE_SCHEMAS", "CANNOT_MERGE_INCOMPATIBLE_DATA_TYPE"})
"""Spark's conditions for files whose schemas it cannot merge (read on the driver, or by a job)."""

# A step into a type: ("field", name), ("element", ""), ("key", "") or ("value", "").
_Step = tuple[str, str]


def _type_clash(
    one: DataType, other: DataType, path: tuple[_Step, ...]
) -> tuple[tuple[_Step, ...], DataType, DataType] | None:
    """The first field whose types in ``one`` and ``other`` no union reconciles without changing values
    (two numbers differ in width only): its path and both types; None when they agree."""
    from pyspark.sql import types as T

    numbers = (T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.FloatType, T.DoubleType)
    if one == other or (isinstance(one, numbers) and isinstance(other, numbers)):
        return None
    if isinstance(one, T.StructType) and isinstance(other, T.StructType):
        theirs = {f.name.lower(): f.dataType for f in other.fields}
        for field_ in one.fields:
            if field_.name.lower() in theirs:
                step = ("field", field_.name)
                clash = _type_clash(field_.dataType, theirs[field_.name.lower()], (*path, step))
                if clash is not None:
                    return clash
        return None
    if isinstance(one, T.ArrayType) and isinstance(other, T.ArrayType):
        return _type_clash(one.elementType, other.elementType, (*path, ("element", "")))
    if isinstance(one, T.MapType) and isinstance(other, T.MapType):
        return _type_clash(one.keyType, other.keyType, (*path, ("key", ""))) or _type_clash(
            one.valueType, other.valueType, (*path, ("value", ""))
        )
    return path, one, other


def _type_at(type_: DataType | None, path: tuple[_Step, ...]) -> DataType | None:
    from pyspark.sql.types import ArrayType, MapType, StructType

    for kind, name in path:
        if kind == "field" and isinstance(type_, StructType):
            type_ = next((f.dataType for f in type_.fields if f.name.lower() == name.lower()), None)
        elif kind == "element" and isinstance(type_, ArrayType):
            type_ = type_.elementType
        elif kind in ("key", "value") and isinstance(type_, MapType):
            type_ = type_.keyType if kind == "key" else type_.valueType
        else:
            return None
    return type_


def _shown_path(path: tuple[_Step, ...]) -> str:
    shown = ""
    for kind, name in path:
        if kind == "field":
            shown += f".{name}" if shown else name
        else:
            shown += "[]" if kind == "element" else f"{{{kind}}}"
    return shown


def _file_with(spark: SparkSession, files: list[str], path: tuple[_Step, ...], type_: DataType) -> str:
    """The first of ``files`` whose own schema gives the field at ``path`` the type ``type_`` (or a
    number, when ``type_`` is a number the union widened)."""
    for file in files:
        found = _type_at(spark.read.parquet(file).schema, path)
        if found is not None and _type_clash(found, type_, path) is None:
            return file
    return files[0]  # pragma: no cover - the group's schema came from its files


def landed_offsets(df: DataFrame) -> dict[str, Any]:
    """``{"kafka_offsets": {topic: {partition: highest offset}}}`` of landed rows (the consumer's
    ``_kafka_*`` columns; one small job), recorded with the files so a table version tells the consumer
    offsets it holds data up to; empty when the files carry no offsets."""
    from pyspark.sql import functions as F

    if not {"_kafka_topic", "_kafka_partition", "_kafka_offset"} <= set(df.columns):
        return {}
    rows = (
        df.groupBy("_kafka_topic", "_kafka_partition")
        .agg(F.max("_kafka_offset").alias("offset"))
        .where(F.col("_kafka_topic").isNotNull() & F.col("offset").isNotNull())
        .collect()
    )
    offsets: dict[str, dict[str, int]] = {}
    for row in rows:
        offsets.setdefault(row["_kafka_topic"], {})[str(row["_kafka_partition"])] = int(row["offset"])
    return {"kafka_offsets": offsets} if offsets else {}


# --- kafka -------------------------------------------------------------------------------------------


def _kafka_options(settings: ThimbleSettings, source: KafkaSource) -> dict[str, str]:
    options = {
        "kafka.bootstrap.servers": settings.kafka.bootstrap_servers,
        "kafka.security.protocol": settings.kafka.security_protocol,
    }
    options.update(source.options)
    return options


def _stored_offsets(spark: SparkSession, table: str, topic: str) -> tuple[dict[int, int], int | None]:
    """The offsets of ``topic`` the table's newest commit holding them loaded up to, and the version they
    were read at (None: no table)."""
    if not _tables.exists(spark, table):
        return {}, None
    commits = _tables.commits(spark, table)
    read_at = commits[0]["version"] if commits else None
    for commit in commits:
        stored = commit["thimble"].get("source", {}).get("kafka", {})
        if stored.get("topic") == topic:
            return {int(p): int(o) for p, o in stored.get("offsets", {}).items()}, read_at
    return {}, read_at


def _watermarks(settings: ThimbleSettings, topic: str) -> dict[int, tuple[int, int]]:
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    conf = settings.kafka.client_config()
    conf.update({"group.id": "thimble-etl-watermarks", "enable.auto.commit": False})
    consumer = Consumer(conf)
    try:
        metadata = consumer.list_topics(topic, timeout=15)
        info = metadata.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            raise SourceError(f"source.topic: no topic '{topic}' on {settings.kafka.bootstrap_servers}")
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)
            for p in sorted(info.partitions)
        }
    except KafkaException as exc:
        raise ServiceUnavailableError(f"Kafka at {settings.kafka.bootstrap_servers}: {exc}") from None
    finally:
        consumer.close()


def _read_kafka(
    spark: SparkSession, source: KafkaSource, schema: SchemaConfig, settings: ThimbleSettings, table: str
) -> SourceBatch:
    import json

    from pyspark.sql import functions as F

    stored, read_at = _stored_offsets(spark, table, source.topic)
    marks = _watermarks(settings, source.topic)
    start: dict[str, int] = {}
    end: dict[str, int] = {}
    for partition, (low, high) in marks.items():
        begin = stored.get(partition, low if source.starting_offsets == "earliest" else high)
        if begin < low:
            log.warning(
                "offsets %s-%s of %s[%s] expired before they were loaded",
                begin,
                low - 1,
                source.topic,
                partition,
            )
            begin = low
        start[str(partition)] = begin
        end[str(partition)] = max(high, begin)
    progress = {"kafka": {"topic": source.topic, "offsets": end}}
    total = sum(end[p] - start[p] for p in end)
    description = f"{total} new message(s) in {source.topic}"
    if total == 0:
        return SourceBatch(None, progress, description)
    raw = (
        spark.read.format("kafka")
        .options(**_kafka_options(settings, source))
        .option("subscribe", source.topic)
        .option("startingOffsets", json.dumps({source.topic: start}))
        .option("endingOffsets", json.dumps({source.topic: end}))
        .option("failOnDataLoss", "false")
        .load()
    )
    ddl = _sql.ddl([*(schema.columns or {}).items(), (_CORRUPT, "string")])
    value = F.col("value").cast("string")
    options = {
        **STRICT_JSON,
        **source.json_options,
        "mode": "PERMISSIVE",
        "columnNameOfCorruptRecord": _CORRUPT,
    }
    parsed = raw.select(
        F.from_json(value, ddl, options).alias("_v"),
        value.alias("_raw"),
        F.col("topic").alias("_kafka_topic"),
        F.col("partition").alias("_kafka_partition"),
        F.col("offset").alias("_kafka_offset"),
        F.col("timestamp").alias("_kafka_timestamp"),
    )
    bad = F.col("_v").isNull() | F.col("_v").getField(_CORRUPT).isNotNull()
    df = parsed.select(
        *[F.col("_v").getField(name).alias(name) for name in (schema.columns or {})],
        *KAFKA_COLUMNS,
        F.when(
            bad,
            F.concat(
                F.lit("source: not a JSON object matching schema.columns: "), F.substring("_raw", 1, 500)
            ),
        ).alias(SOURCE_ERROR),
    )
    return SourceBatch(df, progress, description, progress_from=read_at)


# --- files -------------------------------------------------------------------------------------------


def _read_files(spark: SparkSession, source: FilesSource, schema: SchemaConfig) -> SourceBatch:
    reader = spark.read.format(source.format).options(**source.options)
    if source.format == "csv":
        reader = reader.option("header", source.options.get("header", "true"))
    typed = bool(schema.columns) and source.format in ("csv", "json")
    if typed:
        assert schema.columns is not None
        reader = reader.schema(_sql.ddl([*schema.columns.items(), (_CORRUPT, "string")])).options(
            mode="PERMISSIVE", columnNameOfCorruptRecord=_CORRUPT
        )
    elif source.format == "csv":
        reader = reader.option("inferSchema", source.options.get("inferSchema", "true"))
    try:
        df = reader.load(source.path)
    except Exception as exc:  # Spark raises AnalysisException subclasses for missing paths
        raise SourceError(
            f"source.path: cannot read {source.format} at {source.path}: {str(exc).splitlines()[0]}"
        ) from None
    if typed:
        df = _flag_corrupt(df, source.format, schema)
    return SourceBatch(df, {}, f"{source.format} files at {source.path}")


_CORRUPT = "_thimble_corrupt"


def _flag_corrupt(df: DataFrame, fmt: str, schema: SchemaConfig) -> DataFrame:
    """Rows with a value that does not match ``schema.columns`` carry the reason in ``_source_error``."""
    from pyspark.sql import functions as F

    columns = schema.columns or {}
    raw = F.col(_CORRUPT)
    reasons = [F.lit(f"source: a row does not match schema.columns ({fmt})")]
    if fmt == "json":
        reasons = [
            F.when(
                F.get_json_object(raw, f"$.{n}").isNotNull() & _sql.col(n).isNull(),
                F.lit(f"source: value of '{n}' is not a {k}"),
            )
            for n, k in columns.items()
            if n.isidentifier()
        ] + reasons
    error = F.when(raw.isNotNull(), F.concat(F.coalesce(*reasons), F.lit(": "), F.substring(raw, 1, 500)))
    return df.select(*[_sql.col(n) for n in columns], error.alias(SOURCE_ERROR))
