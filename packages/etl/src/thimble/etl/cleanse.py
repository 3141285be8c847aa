"""Cleanse: the ordered steps of ``cleanse:`` applied to the source DataFrame (lazily, no Spark job)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from thimble.etl import _sql
from thimble.etl.config import (
    CaseStep,
    CastStep,
    CleanseStep,
    DedupeStep,
    DropWhereStep,
    FillStep,
    ParseTimestampStep,
    RegexReplaceStep,
    RenameStep,
    SqlStep,
    TrimStep,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


def apply_step(df: DataFrame, step: CleanseStep) -> DataFrame:
    """Apply one cleanse step."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if isinstance(step, TrimStep):
        return df.withColumns({c: F.trim(_sql.col(c)) for c in step.columns})
    if isinstance(step, CaseStep):
        fn = F.lower if step.to == "lower" else F.upper
        return df.withColumns({c: fn(_sql.col(c)) for c in step.columns})
    if isinstance(step, CastStep):
        return df.withColumns({c: _sql.col(c).try_cast(kind) for c, kind in step.columns.items()})
    if isinstance(step, ParseTimestampStep):
        source = _sql.col(step.column)
        if step.to == "date":
            parsed = F.try_to_date(source, step.format) if step.format else source.try_cast("date")
        else:
            parsed = (
                F.try_to_timestamp(source, F.lit(step.format))
                if step.format
                else source.try_cast("timestamp")
            )
        return df.withColumn(step.output or step.column, parsed)
    if isinstance(step, FillStep):
        types = {f.name: f.dataType for f in df.schema.fields}
        return df.withColumns(
            {c: F.coalesce(_sql.col(c), F.lit(v).cast(types[c])) for c, v in step.values.items()}
        )
    if isinstance(step, RegexReplaceStep):
        return df.withColumn(
            step.column, F.regexp_replace(_sql.col(step.column), step.pattern, step.replacement)
        )
    if isinstance(step, RenameStep):
        return df.withColumnsRenamed(step.columns)
    if isinstance(step, DropWhereStep):
        return df.filter(~F.coalesce(F.expr(step.condition), F.lit(False)))
    if isinstance(step, DedupeStep):
        order = (
            _sql.col(step.order_by).desc_nulls_last()
            if step.keep == "latest"
            else _sql.col(step.order_by).asc_nulls_last()
        )
        window = Window.partitionBy(*[_sql.col(k) for k in step.keys]).orderBy(order)
        return (
            df.withColumn("_thimble_rank", F.row_number().over(window))
            .filter("_thimble_rank = 1")
            .drop("_thimble_rank")
        )
    if isinstance(step, SqlStep):
        return df.withColumn(step.column, F.expr(step.expression))
    raise TypeError(f"unknown cleanse step {step!r}")


def keeps_every_row(steps: Sequence[CleanseStep]) -> bool:
    """Whether ``steps`` only change values: the rows cleansed are the rows read, one for one."""
    per_row = (TrimStep, CaseStep, CastStep, ParseTimestampStep, FillStep, RegexReplaceStep, RenameStep)
    # not a sql step: its expression may be a generator (explode), which makes rows
    return all(isinstance(step, per_row) for step in steps)


def cleanse(df: DataFrame, steps: Sequence[CleanseStep]) -> DataFrame:
    """Apply ``steps`` in order."""
    for step in steps:
        df = apply_step(df, step)
    return df
