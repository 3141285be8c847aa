"""Batch scoring on Spark: the same model function over a warehouse table, through Arrow (``mapInPandas``).

The output is a versioned Delta table; each commit records the model version and the input table version.
Quality metrics (row count, nulls, mean/min/max of each prediction) and drift (PSI of inputs and
predictions against the training sample) come from one Spark aggregation after the write: over the rows
the run wrote and the input rows it scored (columns read, the model not run again). It is the same in
process and over Spark Connect.
"""

from __future__ import annotations

import enum
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from thimble.common.features import qualified_table
from thimble.common.logging import get_logger
from thimble.common.spark import uses_connect
from thimble.modelops import _drift
from thimble.modelops._column_types import (
    input_mismatch,
    is_enum,
    numeric_fields,
    spark_type,
)
from thimble.modelops._user_code import send_user_code
from thimble.modelops.config import ModelOpsSettings, load_modelops_settings
from thimble.modelops.envelope import LoadedModel
from thimble.modelops.errors import ModelOpsError, SchemaMismatchError
from thimble.modelops.registry import Registry

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql.types import StructType

log = get_logger(__name__)
MODEL_COLUMN = "_model"
VERSION_COLUMN = "_model_version"
INPUT_VERSION_COLUMN = "_input_version"
RUN_COLUMN = "_run_id"


@dataclass(frozen=True)
class BatchResult:
    """What a batch run wrote, and what it measured."""

    run_id: str
    model: str
    model_version: int
    input_table: str
    input_version: int | None
    output_table: str
    output_version: int | None
    rows: int
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)
    where: str | None = None
    rejected: int = 0
    """Input rows not scored because they do not validate as the model's input (the others are written)."""
    rejected_reasons: dict[str, int] = field(default_factory=dict)
    """The most frequent reasons rows were rejected (``spend_7d: Input should be a valid number``), with counts."""


def qualified(table: str, settings: ModelOpsSettings) -> str:
    """``name`` -> ``<warehouse database>.name``."""
    return qualified_table(table, settings.warehouse.database)


def table_version(spark: SparkSession, table: str, settings: ModelOpsSettings | None = None) -> int | None:
    """The current Delta version of ``table`` (``None`` when it is not a Delta table)."""
    from thimble.etl import table_version as delta_version

    try:
        return delta_version(table, spark=spark, settings=settings or load_modelops_settings())
    except Exception:
        return None


def write_table(
    df: DataFrame,
    table: str,
    *,
    mode: str,
    run_id: str,
    metadata: dict[str, Any],
    quality: Mapping[str, Any] | None = None,
    settings: ModelOpsSettings | None = None,
) -> tuple[int | None, dict[str, float | None]]:
    """Write ``df`` to the Delta table in one commit through thimble-etl; return (version, quality metrics).

    ``metadata`` is recorded in the commit (``thimble.metadata``, see ``thimble.etl.history``); ``quality``
    (thimble-etl metrics and checks) is measured on the rows written. ``overwrite`` replaces the table's
    schema too, so a model version with other outputs can take over its predictions table.
    """
    from thimble.etl import EtlError, write_dataframe
    from thimble.etl.config import BUILTIN_METRICS

    if mode not in ("overwrite", "append"):
        raise ModelOpsError(f"mode {mode!r}: use overwrite or append")
    try:
        result = write_dataframe(
            df,
            table,
            mode="overwrite" if mode == "overwrite" else "append",  # narrows the type
            run_id=run_id,
            metadata=metadata,
            quality=quality,
            overwrite_schema=mode == "overwrite",
            settings=settings,
        )
    except EtlError as exc:
        raise ModelOpsError(_reported(exc)) from None
    return result.version, {k: v for k, v in result.metrics.items() if k not in BUILTIN_METRICS}


_TRACEBACK = "Traceback (most recent call last):"


def _reported(exc: Exception) -> str:
    """A failed write in one line. When Spark's reason is only the first line of a Python worker's
    traceback (in process, a job over a cached plan), it says what the worker raised, as Spark Connect's
    does: ``... a Python worker raised PredictionError: model churn@1 returned inf for 'p' ...``."""
    message = str(exc)
    if message.endswith(f"PythonException: {_TRACEBACK}") and exc.__context__ is not None:
        raised = _worker_raised(str(exc.__context__))
        if raised is not None:
            return f"{message.removesuffix(f'PythonException: {_TRACEBACK}')}a Python worker raised {raised}"
    return message


def _worker_raised(text: str) -> str | None:
    """The last line of the first Python traceback quoted in ``text`` (its exception's module left out)."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.endswith(_TRACEBACK)), None)
    if start is None:
        return None
    raised = None
    for line in lines[start + 1 :]:
        if line.startswith(("\tat ", "JVM stacktrace")):
            break
        if line.strip() and not line[0].isspace():
            raised = line.strip()
    if raised is None:
        return None
    kind, sep, reason = raised.partition(": ")
    return f"{kind.rsplit('.', 1)[-1]}: {reason}" if sep else raised


def prediction_quality(model: LoadedModel) -> dict[str, Any]:
    """The quality metrics of a predictions table: rows, completeness of each output, min/max/mean of numbers."""
    metrics: list[dict[str, Any]] = [{"metric": "row_count"}]
    metrics += [{"metric": "completeness", "column": f} for f in model.output_fields]
    metrics += [
        {"metric": kind, "column": f}
        for f in numeric_fields(model.output_type)
        for kind in ("min", "max", "mean")
    ]
    return {"metrics": metrics}


def check_input(model: LoadedModel, schema: StructType, table: str) -> None:
    """Raise :class:`SchemaMismatchError` naming every model input the table lacks or types differently."""
    columns = {f.name: f.dataType.simpleString().split("(")[0] for f in schema.fields}
    problems = []
    for name, info in model.input_type.model_fields.items():
        if name not in columns:
            if info.is_required():
                problems.append(f"column '{name}' is missing")
        elif (why := input_mismatch(info.annotation, columns[name])) is not None:
            problems.append(f"column '{name}' {why}")
    if problems:
        raise SchemaMismatchError(f"{table} does not match the input of {model.ref}: " + "; ".join(problems))


class _Stats:
    """The statistics of a run as Spark aggregates: rows, and of each numeric prediction its nulls, sum,
    min, max and histogram; of each numeric input with a baseline, its histogram (the baseline's edges).

    A value counts in a bucket ``i`` when ``edges[i-1] <= value < edges[i]`` (``numpy.searchsorted(...,
    side="right")``); null, NaN and infinite values count as nulls, in no bucket.
    """

    def __init__(self, model: LoadedModel) -> None:
        baseline = model.info.baseline if model.info else {}
        entity = model.features.entity_key if model.features else None
        self.inputs = {
            f: baseline[f"input.{f}"].edges
            for f in numeric_fields(model.input_type)
            if f != entity and f"input.{f}" in baseline
        }
        self.outputs = numeric_fields(model.output_type)
        self.output_edges = {
            f: baseline[f"output.{f}"].edges for f in self.outputs if f"output.{f}" in baseline
        }

    def measure(self, scored: DataFrame, inputs: DataFrame) -> dict[str, Any]:
        """The statistics of the ``scored`` rows and of the ``inputs`` they were scored from (one Spark job)."""
        from pyspark.sql import functions as F

        out_exprs: list[Column] = [F.count(F.lit(1)).alias("rows")]
        for f in self.outputs:
            value, finite = _finite(f)
            out_exprs += [
                F.count_if(~finite).alias(f"nulls.{f}"),
                F.sum(F.when(finite, value)).alias(f"sum.{f}"),
                F.min(F.when(finite, value)).alias(f"min.{f}"),
                F.max(F.when(finite, value)).alias(f"max.{f}"),
                *_histogram(f, self.output_edges.get(f, []), f"hist.output.{f}"),
            ]
        in_exprs = [F.count(F.lit(1)).alias("input_rows")] + [
            expr
            for f, edges in self.inputs.items()
            if f in inputs.columns
            for expr in _histogram(f, edges, f"hist.input.{f}")
        ]
        frame = scored.agg(*out_exprs).crossJoin(inputs.agg(*in_exprs))
        row = frame.first()
        assert row is not None
        return _gathered(row.asDict())


def _finite(column: str) -> tuple[Column, Column]:
    from pyspark.sql import functions as F

    value = F.col(f"`{column}`").cast("double")
    finite = value.isNotNull() & ~F.isnan(value) & (F.abs(value) != F.lit(float("inf")))
    return value, finite


def _histogram(column: str, edges: Sequence[float], prefix: str) -> list[Column]:
    """One count per bucket of ``edges`` (len(edges) + 1 of them), named ``prefix.<i>``."""
    from pyspark.sql import functions as F

    value, finite = _finite(column)
    bounds: list[tuple[float | None, float | None]] = list(zip([None, *edges], [*edges, None], strict=True))
    counts = []
    for i, (low, high) in enumerate(bounds):
        inside = finite
        if low is not None:
            inside = inside & (value >= F.lit(float(low)))
        if high is not None:
            inside = inside & (value < F.lit(float(high)))
        counts.append(F.count_if(inside).alias(f"{prefix}.{i}"))
    return counts


def _gathered(row: Mapping[str, Any]) -> dict[str, Any]:
    """Aggregated columns back to the statistics' shape: histograms as lists, empty min/max as +-inf."""
    stats: dict[str, Any] = {}
    hists: dict[str, dict[int, int]] = {}
    for key, value in row.items():
        if key.startswith("hist."):
            name, _, index = key.rpartition(".")
            hists.setdefault(name, {})[int(index)] = int(value)
        elif key.startswith("min."):
            stats[key] = float(value) if value is not None else np.inf
        elif key.startswith("max."):
            stats[key] = float(value) if value is not None else -np.inf
        elif key.startswith("sum."):
            stats[key] = float(value or 0.0)
        else:
            stats[key] = int(value or 0)
    for name, counts in hists.items():
        stats[name] = [counts[i] for i in range(len(counts))]
    return stats


_LOADED: dict[tuple[str, str, int, bool], LoadedModel] = {}


def _cached_model(registry: Registry, name: str, version: int) -> LoadedModel:
    """``name@version`` loaded once per process: versions are immutable (the driver and each Python worker).

    A model loaded without signature checks is not reused by a registry that checks them.
    """
    key = (registry.url, name, version, registry.signer is not None)
    if key not in _LOADED:
        _LOADED[key] = registry.load(f"{name}@{version}")
    return _LOADED[key]


def score(
    df: DataFrame,
    model: LoadedModel,
    registry: Registry | str,
    keep: list[str],
) -> DataFrame:
    """``df`` scored by ``model`` (loaded in each Python worker from the registry): kept columns + outputs.

    The registry goes to the workers with its storage options and signing key, so each worker's load is
    checked as the driver's was. Over Spark Connect the model's own code goes to the session too.
    """
    from pyspark.sql import types as T

    if uses_connect(df.sparkSession):
        send_user_code(df.sparkSession, model)

    assert model.version is not None
    name, version = model.name, model.version
    source = Registry(registry) if isinstance(registry, str) else registry
    inputs = [c for c in model.input_fields if c in df.columns]
    kept_types = {f.name: f.dataType for f in df.schema.fields}
    schema = T.StructType(
        [T.StructField(c, kept_types[c]) for c in keep]
        + [
            T.StructField(f, spark_type(model.output_type.model_fields[f].annotation))
            for f in model.output_fields
        ]
    )
    columns = list(dict.fromkeys([*inputs, *keep]))
    enums = [f for f in model.output_fields if is_enum(model.output_type.model_fields[f].annotation)]

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        m = _cached_model(source, name, version)
        for pdf in batches:
            pdf, out = _score_valid(m, pdf)
            for c in enums:  # the column holds the values, as served JSON does
                out[c] = [v.value if isinstance(v, enum.Enum) else v for v in out[c]]
            for i, c in enumerate(keep):
                out.insert(i, c, pdf[c].to_numpy())
            yield out

    return df.select(*columns).mapInPandas(run, schema)  # type: ignore[arg-type]


def _score_valid(model: LoadedModel, pdf: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows of ``pdf`` that validate as ``model``'s input, and their outputs; the others are left out
    (counted after the write: :func:`rejections`). A rows model validates as it runs, so a batch whose rows
    all validate costs nothing more; a frame model's batch is validated first."""
    import pandas as pd

    if model.function.flavor == "rows":
        try:
            return pdf, model.predict_frame(pdf)
        except SchemaMismatchError:
            pass
    pdf, _ = model.split_valid(pdf)
    if pdf.empty:
        return pdf, pd.DataFrame({f: pd.Series([], dtype=object) for f in model.output_fields})
    return pdf, model.predict_frame(pdf)


def rejections(df: DataFrame, model: LoadedModel, registry: Registry | str, top: int = 10) -> dict[str, int]:
    """Why rows of ``df`` do not validate as ``model``'s input: the ``top`` reasons and how many rows each
    (one Spark job that validates, without running the model)."""
    from pyspark.sql import functions as F

    assert model.version is not None
    name, version = model.name, model.version
    source = Registry(registry) if isinstance(registry, str) else registry

    def reasons(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import pandas as pd

        m = _cached_model(source, name, version)
        for pdf in batches:
            _, rejected = m.split_valid(pdf)
            yield pd.DataFrame({"reason": pd.Series(list(rejected.values()), dtype=object)})

    inputs = [c for c in model.input_fields if c in df.columns]
    found = (
        df.select(*inputs)
        .mapInPandas(reasons, "reason string")  # type: ignore[arg-type]
        .groupBy("reason")
        .count()
        .orderBy(F.desc("count"), "reason")
        .limit(top)
        .collect()
    )
    return {row["reason"]: int(row["count"]) for row in found}


def kept_columns(model: LoadedModel, columns: list[str], extra: list[str]) -> list[str]:
    """The input columns a batch output keeps: non-inputs, the entity key, then ``extra``, each once."""
    entity = model.features.entity_key if model.features else model.input_fields[0]
    default = [c for c in columns if c not in model.input_fields or c == entity]
    return list(dict.fromkeys([*default, *extra]))


def run_batch(
    spark: SparkSession,
    model: str | LoadedModel,
    input_table: str,
    output_table: str,
    *,
    keep: list[str] | None = None,
    mode: str = "overwrite",
    input_version: int | None = None,
    where: str | None = None,
    registry: Registry | None = None,
    settings: ModelOpsSettings | None = None,
) -> BatchResult:
    """Score ``input_table`` with ``model`` (a reference or a loaded model) into the Delta ``output_table``.

    ``keep``: input columns copied to the output besides the default ones: every column that is not a
    model input, and the entity key (the first input field unless ``features=`` names another), so that
    scores join back to their rows. ``mode``: ``overwrite`` (a new version of the whole table) or ``append``.
    ``where``: a SQL predicate on the input table (``"is_current"``); only the rows it keeps are scored.
    """
    from pyspark.sql import functions as F

    settings = settings or load_modelops_settings()
    registry = registry or Registry.from_config(settings.modelops)
    if isinstance(model, str):
        name, version = registry.resolve(model)
        loaded = _cached_model(registry, name, version)
    else:
        loaded = model
    if loaded.version is None:
        raise ModelOpsError("batch scoring needs a saved model version (save it first)")
    if mode not in ("overwrite", "append"):
        raise ModelOpsError(f"mode {mode!r}: use overwrite or append")
    source = qualified(input_table, settings)
    target = qualified(output_table, settings)
    # A Delta table has a version: only a table without one needs asking whether it exists.
    version_in = input_version if input_version is not None else table_version(spark, source, settings)
    if (version_in is None or input_version is not None) and not spark.catalog.tableExists(source):
        raise ModelOpsError(f"no table {source!r} in the warehouse")
    reader = spark.read.format("delta")
    if input_version is not None:
        df = reader.option("versionAsOf", input_version).table(source)
    else:
        df = (
            spark.table(source)
            if version_in is None
            else reader.option("versionAsOf", version_in).table(source)
        )
    check_input(loaded, df.schema, source)
    if where is not None:
        df = _filtered(df, where, source)
    keep = kept_columns(loaded, df.columns, keep or [])
    clash = [c for c in keep if c in loaded.output_fields or c not in df.columns]
    if clash:
        raise SchemaMismatchError(
            f"cannot keep {clash}: not columns of {source}, or named like a model output"
        )
    run_id = f"batch-{uuid.uuid4().hex[:12]}"
    scored = score(df, loaded, registry, keep).withColumns(
        {
            MODEL_COLUMN: F.lit(loaded.name),
            VERSION_COLUMN: F.lit(loaded.version).cast("int"),
            INPUT_VERSION_COLUMN: F.lit(version_in).cast("long"),
            RUN_COLUMN: F.lit(run_id),
        }
    )
    conf_key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    previous = spark.conf.get(conf_key, None)
    spark.conf.set(conf_key, str(settings.modelops.batch.max_records_per_batch))
    started = time.perf_counter()
    try:
        version_out, quality = write_table(
            scored,
            target,
            mode=mode,
            run_id=run_id,
            metadata={
                "model": loaded.name,
                "model_version": loaded.version,
                "input_table": source,
                "input_version": version_in,
                "where": where,
            },
            quality=prediction_quality(loaded),
            settings=settings,
        )
    finally:
        if previous is None:
            spark.conf.unset(conf_key)
        else:
            spark.conf.set(conf_key, previous)
    seconds = time.perf_counter() - started
    written = scored.limit(0) if version_out is None else _written(spark, target, version_out, run_id)
    stats = _Stats(loaded).measure(written, df)
    metrics, dists = _summarise(loaded, stats, seconds)
    metrics.update({f"quality.{k}": float(v) for k, v in quality.items() if v is not None})
    rejected = int(stats.get("input_rows", 0)) - int(stats.get("rows", 0))
    reasons = rejections(df, loaded, registry) if rejected > 0 else {}
    metrics["rejected"] = float(max(rejected, 0))
    if rejected > 0:
        log.warning(
            "batch input rows rejected: they do not validate as the model's input and were not scored",
            extra={"model": loaded.ref, "input_table": source, "rejected": rejected, "reasons": reasons},
        )
    result = BatchResult(
        run_id,
        loaded.name,
        loaded.version,
        source,
        version_in,
        target,
        version_out,
        int(stats.get("rows", 0)),
        seconds,
        metrics,
        where,
        max(rejected, 0),
        reasons,
    )
    _track(registry, result, dists)
    log.info(
        "batch scored",
        extra={
            "model": loaded.ref,
            "rows": result.rows,
            "output_table": target,
            "output_version": version_out,
            "seconds": round(seconds, 2),
        },
    )
    return result


def _written(spark: SparkSession, table: str, version: int, run_id: str) -> DataFrame:
    """The rows run ``run_id`` wrote into ``table``, as of ``version``."""
    from pyspark.sql import functions as F

    rows = spark.read.format("delta").option("versionAsOf", version).table(table)
    return rows.filter(F.col(RUN_COLUMN) == run_id)


def _filtered(df: DataFrame, where: str, table: str) -> DataFrame:
    """``df`` filtered by the SQL predicate ``where``; a predicate Spark cannot use is a :class:`ModelOpsError`."""
    from pyspark.errors import PySparkException
    from pyspark.sql import functions as F

    if not where.strip():
        raise ModelOpsError(f"where: an empty predicate; give a SQL condition on the columns of {table}")
    try:
        filtered = df.filter(where)
        # Analysed now: over Spark Connect a plan is analysed only when asked, and a filter's schema is its
        # input's (known without asking the server).
        df.select(F.expr(where)).schema  # noqa: B018
    except PySparkException as exc:
        reason = str(exc).strip().splitlines()[0]
        raise ModelOpsError(f"where {where!r} is not a condition on {table}: {reason}") from None
    return filtered


def _summarise(
    model: LoadedModel, stats: dict[str, Any], seconds: float
) -> tuple[dict[str, float], dict[str, _drift.Histogram]]:
    rows = int(stats.get("rows", 0))
    metrics: dict[str, float] = {
        "rows": float(rows),
        "seconds": seconds,
        "rows_per_s": rows / seconds if seconds else 0.0,
    }
    baseline = model.info.baseline if model.info else {}
    dists: dict[str, _drift.Histogram] = {}
    for key, counts in stats.items():
        if not key.startswith("hist."):
            continue
        _, side, f = key.split(".", 2)
        total = sum(counts)
        base = baseline.get(f"{side}.{f}")
        if base is None or not total:
            continue
        hist = _drift.Histogram(edges=base.edges, fractions=[c / total for c in counts], count=total)
        e = np.clip(np.asarray(base.fractions), 1e-4, None)
        a = np.clip(np.asarray(hist.fractions), 1e-4, None)
        metrics[f"psi.{side}.{f}"] = float(np.sum((a - e) * np.log(a / e)))
        if side == "output":
            dists[f"output.{f}"] = hist
    for f in numeric_fields(model.output_type):
        nulls = int(stats.get(f"nulls.{f}", 0))
        present = rows - nulls
        metrics[f"prediction.{f}.nulls"] = float(nulls)
        if present:
            metrics[f"prediction.{f}.mean"] = stats[f"sum.{f}"] / present
            metrics[f"prediction.{f}.min"] = stats[f"min.{f}"]
            metrics[f"prediction.{f}.max"] = stats[f"max.{f}"]
    return metrics, dists


def _track(registry: Registry, result: BatchResult, dists: dict[str, _drift.Histogram]) -> None:
    registry.tracker().record(
        result.model,
        result.model_version,
        "batch",
        result.run_id,
        result.metrics,
        dists,
        {
            "input_table": result.input_table,
            "input_version": result.input_version,
            "output_table": result.output_table,
            "output_version": result.output_version,
            "where": result.where,
        },
    )
