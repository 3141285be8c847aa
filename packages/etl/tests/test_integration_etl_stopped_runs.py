"""A run stopped after its table's commit, before its metrics rows, then run again: every committed version
has the metrics rows its run would have recorded, once.

The stop is simulated in process: the phase after the commit raises an exception that no code of the run
catches (``BaseException``, as the process dying there would leave it), then the load runs again. Each
batch holds the same values under new keys, so the stopped run's version must get the same metrics rows
as the uninterrupted first run's.

Quarantine rows wait in a staging table until the run's commit: wherever a run stops, each quarantined row
is published once.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession

from thimble.common.config import ThimbleSettings
from thimble.common.features import landing_folder
from thimble.etl import _tables, history, run_table, write_dataframe
from thimble.etl._tables import qualified
from thimble.etl.errors import EtlError
from thimble.etl.load import GatedLoad, Load, OnePassLoad, _append_metrics, staged_table
from thimble.etl.quality import metric_rows
from thimble.testing import in_process_only, in_process_pass

from .conftest import config

pytestmark = [pytest.mark.integration, in_process_pass]


class Stopped(BaseException):
    """The process stopping at this point (nothing of the run handles it)."""


def _stop(*_args: Any, **_kwargs: Any) -> None:
    raise Stopped


def _metrics(spark: SparkSession, settings: ThimbleSettings, table_name: str) -> dict[int, list[Any]]:
    """Per committed version, the metrics rows of its run, without run ids and times."""
    table = qualified(table_name, settings)
    rows = spark.table(f"{settings.warehouse.database}.thimble_quality").filter(f"`table` = '{table}'")
    held = rows.collect()
    versions = {v.version: v.run_id for v in history(table_name, spark=spark, settings=settings)}
    return {
        version: sorted(
            (r.kind, r.name, r.value, r.status, r.committed)
            for r in held
            if r.run_id == run_id and r.version == version
        )
        for version, run_id in versions.items()
    }


def _land(settings: ThimbleSettings, dataset: str, ids: list[str]) -> None:
    """A landed file of ``n`` = 0, 1, ...; its first row fails the rule ``n >= 1``."""
    folder = Path(landing_folder(settings.warehouse.landing, dataset, "2026-01-01"))
    folder.mkdir(parents=True, exist_ok=True)
    rows = pa.table({"client_id": ids, "segment": ["a"] * len(ids), "n": list(range(len(ids)))})
    pq.write_table(rows, folder / f"part-{uuid.uuid4().hex}.parquet")


def _landing_config(prefix: str, **extra: Any) -> tuple[str, str, Any]:
    """(table name, dataset, config) of an incremental load of a new landing dataset under ``n >= 1``."""
    table_name, dataset = f"t_{uuid.uuid4().hex[:10]}", f"{prefix}_{uuid.uuid4().hex[:8]}"
    extra.setdefault("write", {"mode": "append"})
    cfg = config(
        table=table_name,
        source={"type": "landing", "dataset": dataset, "incremental": True},
        schema_={"columns": {"client_id": "string", "segment": "string", "n": "long"}},
        validate_=[{"rule": "range", "column": "n", "min": 1}],
        **extra,
    )
    return table_name, dataset, cfg


@pytest.mark.parametrize("mode", ["append", "journal"])
def test_a_load_stopped_after_its_commit_gets_its_metrics_from_the_next_run(
    spark: SparkSession, spark_settings: ThimbleSettings, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    table_name, dataset, cfg = _landing_config(
        "stops",
        quality={
            "metrics": [{"metric": "row_count"}, {"metric": "mean", "column": "n"}],
            "checks": [{"metric": "row_count", "min": 1}, {"metric": "mean:n", "max": 1, "severity": "warn"}],
        },
        write={"mode": mode},
        **({"journal": {"keys": ["client_id"], "track": ["segment", "n"]}} if mode == "journal" else {}),
    )
    _land(spark_settings, dataset, ["c1", "c2", "c3"])
    first = run_table(cfg, spark=spark, settings=spark_settings)
    assert first.status == "committed"
    _land(spark_settings, dataset, ["c4", "c5", "c6"])
    with monkeypatch.context() as patched:
        patched.setattr(Load, "record", _stop)
        with pytest.raises(Stopped):
            run_table(cfg, spark=spark, settings=spark_settings)

    again = run_table(cfg, spark=spark, settings=spark_settings)

    assert again.status == "no_new_data"
    metrics = _metrics(spark, spark_settings, table_name)
    stopped = max(metrics)
    assert stopped > first.version
    assert metrics[first.version], metrics
    assert metrics[stopped] == metrics[first.version]  # the same rows, once
    table = qualified(table_name, spark_settings)
    quarantine = spark.table(f"{table}_quarantine").filter(f"`table` = '{table}'").collect()
    assert sorted(Counter(r.record for r in quarantine).values()) == [1, 1]  # c1 and c4 (n = 0), once each


@pytest.mark.parametrize("stop", ["commit", "publish_quarantine"], ids=["before-commit", "after-commit"])
def test_a_run_stopped_around_its_commit_leaves_each_quarantined_row_once(
    spark: SparkSession, spark_settings: ThimbleSettings, stop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    table_name, dataset, cfg = _landing_config("staged")
    _land(spark_settings, dataset, ["c1", "c2", "c3"])
    assert run_table(cfg, spark=spark, settings=spark_settings).status == "committed"
    _land(spark_settings, dataset, ["c4", "c5", "c6"])
    with monkeypatch.context() as patched:
        patched.setattr(GatedLoad, stop, _stop)
        with pytest.raises(Stopped):
            run_table(cfg, spark=spark, settings=spark_settings)

    again = run_table(cfg, spark=spark, settings=spark_settings)

    # Stopped before its commit, the load is run again; after it, the next run only finishes it.
    assert again.status == ("committed" if stop == "commit" else "no_new_data")
    table = qualified(table_name, spark_settings)
    quarantine = spark.table(f"{table}_quarantine").collect()
    assert sorted(json.loads(r.record)["client_id"] for r in quarantine) == ["c1", "c4"]
    published = {r.run_id for r in quarantine}
    committed = {v.run_id for v in history(table_name, spark=spark, settings=spark_settings)}
    assert published <= committed  # under the run ids of the commits that loaded them
    leftover = spark.table(staged_table(f"{table}_quarantine")).collect()
    assert [r.run_id for r in leftover] == ([] if stop == "publish_quarantine" else [leftover[0].run_id])


def test_a_run_id_holding_sql_deletes_only_its_own_staged_rows(
    spark: SparkSession, spark_settings: ThimbleSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run id is the caller's (``--run-id``): spelled into the staging table's DELETE, it is a string."""
    table_name, dataset, cfg = _landing_config("hostile")
    _land(spark_settings, dataset, ["c1", "c2"])
    with monkeypatch.context() as patched:
        patched.setattr(GatedLoad, "publish_quarantine", _stop)
        with pytest.raises(Stopped):
            run_table(cfg, spark=spark, settings=spark_settings, run_id="stopped")
    _land(spark_settings, dataset, ["c3", "c4"])
    hostile = "x') OR true OR ('\\' = '"

    again = run_table(cfg, spark=spark, settings=spark_settings, run_id=hostile)

    assert again.status == "committed"
    table = qualified(table_name, spark_settings)
    quarantine = spark.table(f"{table}_quarantine").collect()
    assert sorted((r.run_id, json.loads(r.record)["client_id"]) for r in quarantine) == [
        ("stopped", "c1"),
        (hostile, "c3"),
    ]
    assert spark.table(staged_table(f"{table}_quarantine")).count() == 0


def test_quarantine_rows_that_cannot_be_published_after_the_commit_are_published_by_the_next_run(
    spark: SparkSession, spark_settings: ThimbleSettings
) -> None:
    table_name, dataset, cfg = _landing_config("unpublished")
    table = qualified(table_name, spark_settings)
    spark.sql(f"CREATE VIEW {table}_quarantine AS SELECT 1 AS x")  # in the way of the quarantine table
    _land(spark_settings, dataset, ["c1", "c2"])
    with pytest.raises(EtlError) as failed:
        run_table(cfg, spark=spark, settings=spark_settings)
    message = str(failed.value)
    assert message.startswith(
        f"{table}: version 0 was committed, but its quarantine rows could not be published"
    )
    assert "\n" not in message
    assert "the next run publishes them" in message
    spark.sql(f"DROP VIEW {table}_quarantine")

    again = run_table(cfg, spark=spark, settings=spark_settings)

    assert again.status == "no_new_data"
    quarantine = spark.table(f"{table}_quarantine").collect()
    assert [json.loads(r.record)["client_id"] for r in quarantine] == ["c1"]


@in_process_only
def test_a_one_pass_write_stopped_after_its_commit_gets_its_metrics_from_the_next_run(
    spark: SparkSession, spark_settings: ThimbleSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    table_name = f"t_{uuid.uuid4().hex[:10]}"
    quality = {
        "metrics": [{"metric": "row_count"}, {"metric": "quantile", "column": "n", "quantile": 0.5}],
        "checks": [{"metric": "row_count", "max": 3, "severity": "warn"}],
    }

    def write(first: int) -> Any:
        """Four rows of n = 0..3 under new keys."""
        df = spark.createDataFrame(
            [(f"c{first + i}", float(i)) for i in range(4)], "client_id string, n double"
        )
        return write_dataframe(df, table_name, quality=quality, settings=spark_settings)

    write(0)  # creates the table: the gated path
    with monkeypatch.context() as patched:
        patched.setattr(OnePassLoad, "check", _stop)
        with pytest.raises(Stopped):
            write(10)
    assert write(20).phase_seconds.get("validate") is None  # the one-pass path, uninterrupted

    metrics = _metrics(spark, spark_settings, table_name)
    assert len(metrics) == 3, metrics
    _, stopped, uninterrupted = sorted(metrics)
    assert metrics[uninterrupted], metrics
    assert metrics[stopped] == metrics[uninterrupted]  # measured again on the rows it committed, once


@pytest.mark.parametrize("native", [True, False], ids=["native", "through-spark"])
def test_the_metrics_of_a_version_are_written_once_into_a_metrics_table_their_write_creates(
    spark: SparkSession, spark_settings: ThimbleSettings, monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    """The first write of a version's metrics creates the metrics table: a second write of the same
    version (a later run recording it for a run it thought stopped) finds it there and writes nothing."""
    if not native:
        monkeypatch.setattr(_tables, "append_rows", lambda *_args, **_kwargs: None)
    metrics_table = f"{spark_settings.warehouse.database}.m_{uuid.uuid4().hex[:10]}"
    rows = metric_rows("db.t", "run-1", 3, True, datetime(2026, 1, 1, tzinfo=UTC), {"row_count": 3.0}, [])

    assert _append_metrics(spark, rows, metrics_table, of=("db.t", 3)) is True
    assert _append_metrics(spark, rows, metrics_table, of=("db.t", 3)) is False
    assert _append_metrics(spark, rows, metrics_table, of=("db.t", 4)) is True

    assert spark.table(metrics_table).count() == 2


@pytest.mark.parametrize("native", [True, False], ids=["native", "through-spark"])
def test_a_version_a_later_run_recorded_is_not_recorded_again_by_its_own_run(
    spark: SparkSession, spark_settings: ThimbleSettings, monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    """Two runs of a table at once: the second sees the first's commit before the first records its metrics,
    and records them from the commit's tag; the first's own recording then writes nothing."""
    table_name, dataset = f"t_{uuid.uuid4().hex[:10]}", f"twice_{uuid.uuid4().hex[:8]}"
    cfg = config(
        table=table_name,
        source={"type": "landing", "dataset": dataset, "incremental": True},
        schema_={"columns": {"client_id": "string", "segment": "string", "n": "long"}},
        quality={"metrics": [{"metric": "row_count"}, {"metric": "mean", "column": "n"}]},
        write={"mode": "append"},
    )
    if not native:
        monkeypatch.setattr(_tables, "append_rows", lambda *_args, **_kwargs: None)
    _land(spark_settings, dataset, ["c1", "c2", "c3"])
    first = run_table(cfg, spark=spark, settings=spark_settings)
    _land(spark_settings, dataset, ["c4", "c5", "c6"])
    own_record = Load.record

    def record_after_another_run(self: Load) -> None:
        monkeypatch.setattr(Load, "record", own_record)
        other = run_table(cfg, spark=spark, settings=spark_settings)
        assert other.status == "no_new_data"
        own_record(self)

    monkeypatch.setattr(Load, "record", record_after_another_run)
    second = run_table(cfg, spark=spark, settings=spark_settings)

    assert second.status == "committed"
    metrics = _metrics(spark, spark_settings, table_name)
    assert metrics[first.version], metrics
    assert metrics[second.version] == metrics[first.version]  # the same rows, once


@pytest.mark.parametrize(
    "quality",
    [{"measure": None}, {"run_at": "not a time"}, {"run_at": "2026-01-01T00:00:00", "checks": [["one"]]}],
    ids=["no-run-at", "bad-run-at", "bad-check"],
)
def test_a_commit_whose_quality_tag_cannot_be_read_is_skipped_with_a_warning(
    spark: SparkSession,
    spark_settings: ThimbleSettings,
    quality: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    table_name = f"t_{uuid.uuid4().hex[:10]}"
    df = spark.createDataFrame([("c1", 1.0)], "client_id string, n double")
    write_dataframe(df, table_name, settings=spark_settings)
    table = qualified(table_name, spark_settings)
    tag = {"thimble": {"run_id": "written-elsewhere", "quality": quality}}
    df.write.format("delta").mode("append").option("userMetadata", json.dumps(tag)).saveAsTable(table)

    again = write_dataframe(df, table_name, settings=spark_settings)

    assert again.status == "committed"
    assert (
        f"version {again.version - 1} has no metrics rows and its quality tag cannot be read" in caplog.text
    )
