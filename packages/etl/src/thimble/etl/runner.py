"""Run a table: read -> cleanse -> validate -> quality gate -> write, as one Delta commit (or none)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thimble.common.config import ThimbleSettings, load_settings
from thimble.common.errors import spark_failure
from thimble.common.logging import bind_context, get_logger
from thimble.etl import _connect, _tables
from thimble.etl._columns import check_columns
from thimble.etl._phases import Phases, Progress
from thimble.etl.config import EtlSettings, JournalConfig, QualityConfig, TableConfig, load_table_config
from thimble.etl.errors import ConfigError, SparkJobError
from thimble.etl.load import Load, LoadSpec, RunResult, RunStatus, etl_tables, finish_stopped_runs
from thimble.etl.sources import read_source
from thimble.etl.validate import effective_rules, key_rules
from thimble.etl.writer import WriteMode, WriteSpec

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["Progress", "RunResult", "RunStatus", "run_table", "spark_errors", "write_dataframe"]

log = get_logger(__name__)


@contextmanager
def spark_errors(table: str) -> Iterator[None]:
    """Report a Spark failure as one readable error; the table stays at its previous version."""
    try:
        yield
    except Exception as exc:
        failure = spark_failure(exc)
        if failure is None:
            raise
        raise SparkJobError(table, failure) from None


def new_run_id() -> str:
    """A sortable, unique run id: ``20260101T120000Z-1a2b3c``."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def _settings(settings: ThimbleSettings | None) -> ThimbleSettings:
    return settings if settings is not None else load_settings(EtlSettings)


SNAPSHOT_PARTITIONS = "spark.databricks.delta.snapshotPartitions"


def tune_local(spark: SparkSession) -> None:
    """On a local master, rebuild Delta snapshots with as many partitions as cores (Delta's default, 50,
    is sized for clusters and makes every small commit slow); an explicit setting wins."""
    if _connect.master(spark).startswith("local") and spark.conf.get(SNAPSHOT_PARTITIONS, None) is None:
        spark.conf.set(SNAPSHOT_PARTITIONS, str(max(1, _connect.default_parallelism(spark) or 2)))


def _session(spark: SparkSession | None, settings: ThimbleSettings) -> SparkSession:
    if spark is None:
        from thimble.common.spark import build_spark_session

        spark = build_spark_session(settings, app_name="thimble-etl")
    tune_local(spark)
    return spark


def run_table(
    config: TableConfig | str | Path,
    spark: SparkSession | None = None,
    settings: ThimbleSettings | None = None,
    run_id: str | None = None,
    progress: Progress | None = None,
) -> RunResult:
    """Load one table as its config describes; return what happened (never half-written)."""
    cfg = config if isinstance(config, TableConfig) else load_table_config(config)
    settings = _settings(settings)
    spark = _session(spark, settings)
    table = _tables.qualified(cfg.table, settings)
    phases = Phases(spark, run_id or new_run_id(), progress)
    started = time.monotonic()
    with bind_context(table=table, run_id=phases.run_id), spark_errors(table):
        with phases("read"):
            _tables.adopt_orphan(spark, table)
            batch = read_source(spark, cfg, settings, table)
        if batch.df is None:
            log.info("nothing new to load: %s", batch.description)
            with phases("metrics"):  # a run stopped after its commit left nothing new, and no metrics
                finish_stopped_runs(spark, table, *etl_tables(settings, table), phases.run_id)
            current = _tables.version(spark, table)
            return RunResult(
                table, phases.run_id, "no_new_data", current, current, cfg.config_hash(),
                source=batch.description,
            )  # fmt: skip
        types = {f.name: f.dataType.simpleString() for f in batch.df.schema.fields}
        problems = check_columns(cfg, dict(types))
        if problems:
            raise ConfigError(problems, source=f"config of {table} (against its source)")
        spec = LoadSpec(
            table=table,
            write=WriteSpec(
                mode=cfg.write.mode,
                keys=tuple(cfg.write.keys),
                partition_by=tuple(cfg.write.partition_by),
                journal=cfg.journal,
                evolution=cfg.schema_.evolution,
                allow_missing_columns=cfg.schema_.allow_missing_columns,
            ),
            steps=tuple(cfg.cleanse),
            rules=tuple(effective_rules(cfg)),
            quality=cfg.quality,
            config_hash=cfg.config_hash(),
            source_progress=batch.progress,
            source_read=batch.read,
            progress_from=batch.progress_from,
        )
        result = Load.start(spark, settings, spec, batch.df, phases).run()
    result.seconds = time.monotonic() - started
    result.source = batch.description
    return result


def write_dataframe(
    df: DataFrame,
    table: str,
    mode: WriteMode = "append",
    keys: Sequence[str] = (),
    partition_by: Sequence[str] = (),
    journal: JournalConfig | Mapping[str, Any] | None = None,
    quality: QualityConfig | Mapping[str, Any] | None = None,
    run_id: str | None = None,
    settings: ThimbleSettings | None = None,
    allow_new_columns: bool = False,
    progress: Progress | None = None,
    metadata: Mapping[str, Any] | None = None,
    overwrite_schema: bool = False,
    allow_missing_columns: bool = False,
) -> RunResult:
    """Write a DataFrame produced elsewhere into a warehouse table, with the same guarantees as a run.

    Null keys (and duplicate keys for ``merge``) go to quarantine; ``quality`` checks gate the write.
    ``metadata`` (JSON-able) is recorded in the commit, under ``thimble.metadata``, and shown by ``history()``.
    ``overwrite_schema`` (``mode="overwrite"`` only) replaces the whole table, its schema included.
    ``allow_missing_columns`` writes the table's columns that ``df`` lacks as null (otherwise it fails).
    """
    settings = _settings(settings)
    name = _tables.argument(table, settings, "write_dataframe")
    spark = _session(df.sparkSession, settings)
    journal_cfg = JournalConfig.model_validate(journal) if isinstance(journal, Mapping) else journal
    quality_cfg = (
        QualityConfig.model_validate(quality) if isinstance(quality, Mapping) else quality or QualityConfig()
    )
    if mode == "journal" and journal_cfg is None:
        raise ConfigError(["mode 'journal' needs journal={'keys': [...]}"], source="write_dataframe")
    if mode == "merge" and not keys:
        raise ConfigError(["mode 'merge' needs keys"], source="write_dataframe")
    if overwrite_schema and mode != "overwrite":
        raise ConfigError(
            [f"overwrite_schema needs mode 'overwrite', not '{mode}'"], source="write_dataframe"
        )
    spec = LoadSpec(
        table=name,
        write=WriteSpec(
            mode=mode,
            keys=tuple(keys),
            partition_by=tuple(partition_by),
            journal=journal_cfg,
            evolution="allow_new_columns" if allow_new_columns else "fail",
            overwrite_schema=overwrite_schema,
            allow_missing_columns=allow_missing_columns,
        ),
        rules=tuple(key_rules(journal_cfg.keys if journal_cfg is not None else keys, journal_cfg)),
        quality=quality_cfg,
        metadata=_caller_metadata(metadata),
    )
    phases = Phases(spark, run_id or new_run_id(), progress)
    started = time.monotonic()
    with bind_context(table=name, run_id=phases.run_id), spark_errors(name):
        _tables.adopt_orphan(spark, name)
        result = Load.start(spark, settings, spec, df, phases).run()
    result.seconds = time.monotonic() - started
    result.source = "DataFrame"
    return result


def _caller_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """``metadata`` as a JSON object, or a :class:`ConfigError` naming what cannot be one."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ConfigError(
            [f"metadata must be a mapping, not {type(metadata).__name__}"], source="write_dataframe"
        )
    out = dict(metadata)
    bad = [repr(k) for k in out if not isinstance(k, str)]
    if bad:
        raise ConfigError([f"metadata keys must be strings: {', '.join(bad)}"], source="write_dataframe")
    try:
        json.dumps(out, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            [f"metadata must be JSON (str, numbers, bools, null, lists, mappings): {exc}"],
            source="write_dataframe",
        ) from None
    return out
