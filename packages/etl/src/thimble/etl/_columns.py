"""Follow the columns through a config (source -> cleanse -> validate/quality/journal/write) and report
every reference to a column that will not exist, or whose type does not fit, at that point."""

from __future__ import annotations

from thimble.common.features import JOURNAL_COLUMNS
from thimble.common.validation import did_you_mean
from thimble.etl.config import (
    CaseStep,
    CastStep,
    DedupeStep,
    FillStep,
    NotNullRule,
    ParseTimestampStep,
    RangeRule,
    RegexReplaceStep,
    RegexRule,
    RenameStep,
    SqlStep,
    TableConfig,
    TrimStep,
    UniqueRule,
)

_NUMERIC = (
    "tinyint",
    "smallint",
    "int",
    "bigint",
    "float",
    "double",
    "decimal",
    "byte",
    "short",
    "integer",
    "long",
)
_WIDENING = {
    ("int", "bigint"), ("tinyint", "int"), ("smallint", "int"), ("tinyint", "bigint"), ("smallint", "bigint"),
    ("float", "double"), ("int", "double"), ("bigint", "double"), ("date", "timestamp"),
}  # fmt: skip

Types = dict[str, str | None]


def is_numeric(kind: str | None) -> bool:
    return kind is None or kind.startswith(_NUMERIC)


class _Scope:
    """The columns known at one point of the pipeline."""

    def __init__(self, types: Types, where: str) -> None:
        self.types = dict(types)
        self.where = where
        self.problems: list[str] = []

    def need(self, path: str, column: str, kind_ok: tuple[str, ...] | None = None, what: str = "") -> None:
        if column not in self.types:
            self.problems.append(
                f"{path}: no column '{column}' {self.where}{did_you_mean(column, self.types)}"
            )
            return
        kind = self.types[column]
        if kind_ok is not None and kind is not None and not kind.startswith(kind_ok):
            self.problems.append(f"{path}: column '{column}' is {kind}; {what}")


def check_columns(config: TableConfig, source_types: Types) -> list[str]:
    """Problems with column names and types in ``config``, given the source's columns and types."""
    scope = _Scope(source_types, "in the source")
    for i, step in enumerate(config.cleanse):
        path = f"cleanse[{i}]"
        changed = _apply_step(scope, step, path)
        if changed:
            scope.where = "at this point (after cleanse)"
    for i, rule in enumerate(config.validate_):
        path = f"validate[{i}]"
        if isinstance(rule, NotNullRule | UniqueRule):
            for j, col in enumerate(rule.columns):
                scope.need(f"{path}.columns[{j}]", col)
        elif isinstance(rule, RangeRule):
            if any(isinstance(bound, float | int) for bound in (rule.min, rule.max)):
                # A number bound compares the column as a number: Spark would cast each string to one
                # and fail the run on the first that is not.
                scope.need(f"{path}.column", rule.column, _NUMERIC, "range needs a number")
            else:
                scope.need(
                    f"{path}.column",
                    rule.column,
                    (*_NUMERIC, "date", "timestamp", "string"),
                    "range needs a number, date or string",
                )
        elif isinstance(rule, RegexRule):
            scope.need(f"{path}.column", rule.column, ("string",), "regex needs a string (cast it first)")
        elif hasattr(rule, "column"):
            scope.need(f"{path}.column", rule.column)
    for i, metric in enumerate(config.quality.metrics):
        if metric.column is None:
            continue
        path = f"quality.metrics[{i}].column"
        if metric.metric in ("mean", "stddev", "quantile"):
            scope.need(path, metric.column, _NUMERIC, f"{metric.metric} needs a number")
        elif metric.metric in ("min", "max"):
            # A metric's value is a number (a date or time as epoch seconds); a string's min is text.
            kinds = (*_NUMERIC, "date", "timestamp")
            scope.need(path, metric.column, kinds, f"{metric.metric} needs a number, date or timestamp")
        else:
            scope.need(path, metric.column)
    if config.journal is not None:
        journal = config.journal
        for j, col in enumerate(journal.keys):
            scope.need(f"journal.keys[{j}]", col)
        for j, col in enumerate(journal.track or []):
            scope.need(f"journal.track[{j}]", col)
        if journal.order_by is not None:
            scope.need(
                "journal.order_by",
                journal.order_by,
                ("date", "timestamp"),
                "journal.order_by needs a date or timestamp (parse it in cleanse)",
            )
        for col in JOURNAL_COLUMNS:
            if col in scope.types:
                scope.problems.append(
                    f"journal: the data already has a column '{col}', which the journal adds"
                )
    for j, col in enumerate(config.write.keys):
        scope.need(f"write.keys[{j}]", col)
    for j, col in enumerate(config.write.partition_by):
        scope.need(f"write.partition_by[{j}]", col)
    return scope.problems


def _apply_step(scope: _Scope, step: object, path: str) -> bool:
    """Check one cleanse step and update the scope; True when it changed the set of columns."""
    types = scope.types
    if isinstance(step, TrimStep | CaseStep):
        for j, col in enumerate(step.columns):
            scope.need(f"{path}.columns[{j}]", col, ("string",), f"{step.step} needs a string")
    elif isinstance(step, CastStep):
        for col, kind in step.columns.items():
            scope.need(f"{path}.columns.{col}", col)
            types[col] = kind
    elif isinstance(step, ParseTimestampStep):
        scope.need(
            f"{path}.column",
            step.column,
            ("string", "date", "timestamp", "bigint", "int"),
            "parse_timestamp needs a string",
        )
        output = step.output or step.column
        added = output not in types
        types[output] = step.to
        return added
    elif isinstance(step, FillStep):
        for col in step.values:
            scope.need(f"{path}.values.{col}", col)
    elif isinstance(step, RegexReplaceStep):
        scope.need(f"{path}.column", step.column, ("string",), "regex_replace needs a string")
    elif isinstance(step, RenameStep):
        for old, new in step.columns.items():
            scope.need(f"{path}.columns.{old}", old)
            if old in types:
                types[new] = types.pop(old)
        return True
    elif isinstance(step, DedupeStep):
        for j, col in enumerate(step.keys):
            scope.need(f"{path}.keys[{j}]", col)
        scope.need(f"{path}.order_by", step.order_by)
    elif isinstance(step, SqlStep):
        added = step.column not in types
        types[step.column] = None
        return added
    return False


def widening_ok(source: str, declared: str) -> bool:
    """Whether reading ``source`` as ``declared`` keeps every value."""
    return source == declared or declared == "string" or (source, declared) in _WIDENING
