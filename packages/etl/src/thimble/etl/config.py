"""The table config: one YAML file describing a destination table, validated by pydantic.

Every problem is reported on its own line with its path inside the file
(``cleanse[2].columns[0]: ...``); unknown keys, steps and columns get a did-you-mean hint.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from thimble.common.config import KafkaTopic, Section, ThimbleSettings, read_yaml_file
from thimble.common.features import TABLE_NAME, check_name
from thimble.common.validation import did_you_mean, format_location
from thimble.etl._feature_sets import import_feature_set, with_feature_set
from thimble.etl._regex import java_regex_problem
from thimble.etl._variables import substitute
from thimble.etl.errors import ConfigError


def _compiles(value: str) -> str:
    problem = java_regex_problem(value)
    if problem:
        raise ValueError(problem)
    return value


RegexPattern = Annotated[str, AfterValidator(_compiles)]


def _a_number(value: float | str) -> float | str:
    text = value.strip().lower().lstrip("+-") if isinstance(value, str) else ""
    if (isinstance(value, float) and math.isnan(value)) or text == "nan":
        raise ValueError("NaN is not a bound (no value compares with it); give a number")
    return value


Bound = Annotated[float, AfterValidator(_a_number)]
"""A threshold (``min``/``max``) of a check: a number, not NaN (``.nan`` in YAML)."""
RangeBound = Annotated[float | str, AfterValidator(_a_number)]
"""A bound of a range rule: a number, or a date or time as text; not NaN."""

_SIMPLE_TYPES = {
    "string", "boolean", "tinyint", "byte", "smallint", "short", "int", "integer", "bigint", "long",
    "float", "double", "date", "timestamp", "timestamp_ntz", "binary",
}  # fmt: skip
_DECIMAL = re.compile(r"^decimal(\(\s*(\d+)\s*(,\s*(\d+)\s*)?\))?$")
_COMPLEX = re.compile(r"^(array|map|struct)<.+>$")
_WORD = re.compile(r"(`[^`]*`|[A-Za-z_][A-Za-z0-9_]*)(\s*:)?")


def check_table_name(value: object) -> str:
    """``value`` if it is a table name, else ``ValueError`` saying what one is (the rule for every table
    name a user gives, in a config or to a function)."""
    if not isinstance(value, str) or not TABLE_NAME.fullmatch(value):
        raise ValueError(
            "a table is 'name' or 'database.name' (letters, digits, underscores; at most 128 each)"
        )
    return value


TableName = Annotated[str, AfterValidator(check_table_name)]


def check_type(value: str) -> str:
    """Normalise a Spark SQL type name, or raise ``ValueError`` naming the accepted ones."""
    text = value.strip().lower()
    decimal = _DECIMAL.match(text)
    if decimal and decimal[2]:
        problem = _decimal_problem(int(decimal[2]), int(decimal[4] or 0))
        if problem:
            raise ValueError(f"'{value}' is not a Spark SQL type: {problem}")
    if text in _SIMPLE_TYPES or decimal:
        return text
    if _COMPLEX.match(text):
        problem = _nested_type_problem(value.strip())
        if problem:
            raise ValueError(f"'{value}' is not a Spark SQL type: {problem}")
        # Type keywords in lower case, as Spark prints them; struct field names keep their case (JSON keys).
        return _WORD.sub(lambda m: m[0] if m[2] or m[1][0] == "`" else m[0].lower(), value.strip())
    hint = did_you_mean(text, _SIMPLE_TYPES)
    raise ValueError(
        f"unknown type '{value}'{hint} (Spark SQL types: string, int, bigint, double, decimal(p,s), timestamp, ...)"
    )


def _decimal_problem(precision: int, scale: int) -> str | None:
    if not 1 <= precision <= 38:
        return f"a decimal's precision is 1 to 38, not {precision}"
    if scale > precision:
        return f"a decimal's scale ({scale}) is at most its precision ({precision})"
    return None


_TOKEN = re.compile(r"\s*(`(?:[^`]|``)*`|[A-Za-z_][A-Za-z0-9_]*|\d+|[<>,:()]|\S)")


def _nested_type_problem(text: str) -> str | None:
    """What is wrong with an ``array<...>``, ``map<...>`` or ``struct<...>`` type, or None: each part a
    type :func:`check_type` takes, struct fields ``name: type`` (or ``name type``), the brackets closed."""
    tokens = _TOKEN.findall(text)
    at = 0

    def take(expected: str | None = None) -> str:
        nonlocal at
        token = tokens[at] if at < len(tokens) else ""
        if expected is not None and token.lower() != expected:
            raise ValueError(f"expected '{expected}' {f'before {token!r}' if token else 'at the end'}")
        at += 1
        return token

    def peek() -> str:
        return tokens[at].lower() if at < len(tokens) else ""

    def number() -> int:
        digits = take()
        if not digits.isdigit():
            raise ValueError("decimal takes decimal(precision) or decimal(precision, scale)")
        return int(digits)

    def kind() -> None:
        word = take().lower()
        if word in ("array", "map"):
            take("<")
            kind()
            if word == "map":
                take(",")
                kind()
            take(">")
        elif word == "struct":
            take("<")
            while peek() != ">":
                name = take()
                if not (name.startswith("`") or re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name)):
                    raise ValueError(f"{name!r} is not a field name (quote it in backticks)")
                if peek() == ":":
                    take()
                kind()
                if peek() != ">":
                    take(",")
            take(">")
        elif word == "decimal":
            if peek() == "(":
                take()
                precision, scale = number(), 0
                if peek() == ",":
                    take()
                    scale = number()
                take(")")
                problem = _decimal_problem(precision, scale)
                if problem:
                    raise ValueError(problem)
        elif not word or word in set("<>,:()"):
            raise ValueError(f"a type is missing {f'before {word!r}' if word else 'at the end'}")
        elif word not in _SIMPLE_TYPES:
            raise ValueError(f"unknown type {word!r}{did_you_mean(word, _SIMPLE_TYPES)}")

    try:
        kind()
        if at < len(tokens):
            raise ValueError(f"unexpected {tokens[at]!r} after the type")
    except ValueError as exc:
        return str(exc)
    except RecursionError:
        return "nested too deeply"
    return None


SqlType = Annotated[str, Field(min_length=1), AfterValidator(check_type)]
Columns = Annotated[list[str], Field(min_length=1)]

# The characters Delta refuses in a column name (without column mapping), as a message shows each.
DELTA_REFUSED = {" ": "a space", ",": "','", ";": "';'", "{": "'{'", "}": "'}'", "(": "'('", ")": "')'",
                 "\n": "a newline", "\t": "a tab", "=": "'='"}  # fmt: skip


def column_name_problem(name: str) -> str | None:
    """Why Delta would refuse a column named ``name`` (the first character it refuses), or None."""
    for char in name:
        if char in DELTA_REFUSED:
            return (
                f"column name {name!r} holds {DELTA_REFUSED[char]}, which Delta refuses in a column name "
                "(refused: space , ; { } ( ) newline tab =); rename it"
            )
    return None


class _Model(Section):
    model_config = ConfigDict(extra="forbid", validate_default=True, populate_by_name=True)


# --- sources -----------------------------------------------------------------------------------------


class LandingSource(_Model):
    """Parquet files the consumer landed under ``{warehouse.landing}/{dataset}/date=YYYY-MM-DD/``."""

    type: Literal["landing"]
    dataset: str
    """A name as the consumer's ``Landing`` sink takes it: letters, digits, ``_`` and ``-``."""
    incremental: bool = True

    @field_validator("dataset")
    @classmethod
    def _dataset_name(cls, value: str) -> str:
        try:
            return check_name(value, "dataset")
        except ConfigError as exc:
            raise ValueError("; ".join(exc.problems)) from None


class KafkaSource(_Model):
    """A Kafka topic read in batch; values are JSON objects parsed with ``schema.columns``."""

    type: Literal["kafka"]
    topic: KafkaTopic
    starting_offsets: Literal["earliest", "latest"] = "earliest"
    options: dict[str, str] = Field(default_factory=dict)
    json_options: dict[str, str] = Field(default_factory=dict)
    """Spark JSON options over the strict defaults (``allowSingleQuotes: "true"`` for a lenient feed)."""

    @field_validator("json_options")
    @classmethod
    def _keep_quarantine(cls, value: dict[str, str]) -> dict[str, str]:
        fixed = sorted(k for k in value if k.lower() in ("mode", "columnnameofcorruptrecord"))
        if fixed:
            raise ValueError(
                f"{', '.join(fixed)} cannot be set: values that do not parse always go to quarantine"
            )
        return value


class TableSource(_Model):
    """An existing warehouse table, read in full."""

    type: Literal["table"]
    table: TableName


class FilesSource(_Model):
    """CSV, JSON (lines) or Parquet files at a path or glob, read in full."""

    type: Literal["files"]
    path: str = Field(min_length=1)
    format: Literal["csv", "json", "parquet"]
    options: dict[str, str] = Field(default_factory=dict)


Source = Annotated[LandingSource | KafkaSource | TableSource | FilesSource, Field(discriminator="type")]


class SchemaConfig(_Model):
    """Declared columns (name -> Spark SQL type) or none (inferred, then frozen by the table)."""

    columns: dict[str, SqlType] | None = None
    evolution: Literal["fail", "allow_new_columns"] = "fail"
    allow_missing_columns: bool = False
    """Accept a batch without some of the table's columns (written as null); otherwise the run fails."""

    @field_validator("columns")
    @classmethod
    def _types(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("declare at least one column, or leave 'columns' out to infer the schema")
        return value


# --- cleanse -----------------------------------------------------------------------------------------


class TrimStep(_Model):
    """Strip leading and trailing whitespace."""

    step: Literal["trim"]
    columns: Columns


class CaseStep(_Model):
    """Lower- or upper-case strings."""

    step: Literal["case"]
    columns: Columns
    to: Literal["lower", "upper"]


class CastStep(_Model):
    """Cast columns to types (a value that does not convert becomes null)."""

    step: Literal["cast"]
    columns: dict[str, SqlType] = Field(min_length=1)


class ParseTimestampStep(_Model):
    """Parse a string into a timestamp (or date) with a Spark datetime pattern."""

    step: Literal["parse_timestamp"]
    column: str
    format: str | None = None
    to: Literal["timestamp", "date"] = "timestamp"
    output: str | None = None


class FillStep(_Model):
    """Replace nulls with defaults."""

    step: Literal["fill"]
    values: dict[str, str | int | float | bool] = Field(min_length=1)


class RegexReplaceStep(_Model):
    """Replace every match of a Java regular expression."""

    step: Literal["regex_replace"]
    column: str
    pattern: RegexPattern
    replacement: str = ""


class RenameStep(_Model):
    """Rename columns (old -> new)."""

    step: Literal["rename"]
    columns: dict[str, str] = Field(min_length=1)


class DropWhereStep(_Model):
    """Drop the rows where a SQL condition holds (counted in the run summary)."""

    step: Literal["drop_where"]
    condition: str = Field(min_length=1)


class DedupeStep(_Model):
    """Keep one row per key: the latest (or earliest) by ``order_by``."""

    step: Literal["dedupe"]
    keys: Columns
    order_by: str
    keep: Literal["latest", "earliest"] = "latest"


class SqlStep(_Model):
    """Set ``column`` to a SQL expression (new or replacing)."""

    step: Literal["sql"]
    column: str = Field(min_length=1)
    expression: str = Field(min_length=1)


CleanseStep = Annotated[
    TrimStep
    | CaseStep
    | CastStep
    | ParseTimestampStep
    | FillStep
    | RegexReplaceStep
    | RenameStep
    | DropWhereStep
    | DedupeStep
    | SqlStep,
    Field(discriminator="step"),
]

# --- validate ----------------------------------------------------------------------------------------


class _Rule(_Model):
    name: str | None = None

    def rule_name(self) -> str:
        raise NotImplementedError


class NotNullRule(_Rule):
    """Every listed column has a value."""

    rule: Literal["not_null"]
    columns: Columns

    def rule_name(self) -> str:
        return self.name or f"not_null({', '.join(self.columns)})"


class UniqueRule(_Rule):
    """No two rows share the key (every row of a duplicated key is quarantined)."""

    rule: Literal["unique"]
    columns: Columns

    def rule_name(self) -> str:
        return self.name or f"unique({', '.join(self.columns)})"


class RangeRule(_Rule):
    """``min <= column <= max`` (either bound optional; nulls pass, use not_null for them)."""

    rule: Literal["range"]
    column: str
    min: RangeBound | None = None
    max: RangeBound | None = None

    @model_validator(mode="after")
    def _bound(self) -> RangeRule:
        if self.min is None and self.max is None:
            raise ValueError("give 'min', 'max' or both")
        return self

    def rule_name(self) -> str:
        return self.name or f"range({self.column})"


class AllowedValuesRule(_Rule):
    """The column's value is one of ``values`` (nulls pass)."""

    rule: Literal["allowed_values"]
    column: str
    values: list[str | int | float | bool] = Field(min_length=1)

    def rule_name(self) -> str:
        return self.name or f"allowed_values({self.column})"


class RegexRule(_Rule):
    """The column's value matches a Java regular expression (nulls pass)."""

    rule: Literal["regex"]
    column: str
    pattern: RegexPattern

    def rule_name(self) -> str:
        return self.name or f"regex({self.column})"


class SqlRule(_Rule):
    """A SQL predicate every row must satisfy (a null result fails)."""

    rule: Literal["sql"]
    condition: str = Field(min_length=1)

    def rule_name(self) -> str:
        return self.name or f"sql({self.condition})"


Rule = Annotated[
    NotNullRule | UniqueRule | RangeRule | AllowedValuesRule | RegexRule | SqlRule,
    Field(discriminator="rule"),
]

# --- quality -----------------------------------------------------------------------------------------

MetricKind = Literal[
    "row_count",
    "completeness",
    "distinct_count",
    "uniqueness",
    "min",
    "max",
    "mean",
    "stddev",
    "quantile",
    "sql",
]
BUILTIN_METRICS = ("rows_read", "rows_cleansed", "rows_quarantined")


class MetricConfig(_Model):
    """One metric of the rows about to be written; all are computed in one Spark job."""

    metric: MetricKind
    column: str | None = None
    quantile: float | None = Field(default=None, gt=0, lt=1)
    expression: str | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _fields(self) -> MetricConfig:
        if self.metric == "sql":
            if not self.expression or not self.name:
                raise ValueError(
                    "a 'sql' metric needs 'name' and 'expression' (an aggregate, e.g. sum(amount))"
                )
        elif self.metric != "row_count" and not self.column:
            raise ValueError(f"a '{self.metric}' metric needs 'column'")
        if self.metric == "quantile" and self.quantile is None:
            raise ValueError("a 'quantile' metric needs 'quantile' (between 0 and 1)")
        return self

    @property
    def metric_name(self) -> str:
        """``row_count``, ``completeness:email``, ``quantile:amount:0.5`` or the given name."""
        if self.name:
            return self.name
        if self.metric == "row_count":
            return "row_count"
        if self.metric == "quantile":
            return f"quantile:{self.column}:{self.quantile:g}"
        return f"{self.metric}:{self.column}"


class CheckConfig(_Model):
    """A threshold on a metric, or its change against the table's own history; ``fail`` gates the write."""

    metric: str
    min: Bound | None = None
    max: Bound | None = None
    max_change: float | None = Field(default=None, gt=0)
    over_last: int = Field(default=5, ge=1, le=2**31 - 1)  # a Spark limit: a Java int
    severity: Literal["fail", "warn"] = "fail"
    name: str | None = None

    @model_validator(mode="after")
    def _kind(self) -> CheckConfig:
        if self.min is None and self.max is None and self.max_change is None:
            raise ValueError(
                "give 'min', 'max' or 'max_change' (e.g. 0.5 for within ±50% of the trailing mean)"
            )
        return self

    @property
    def check_name(self) -> str:
        if self.name:
            return self.name
        parts = []
        if self.min is not None:
            parts.append(f">= {self.min:g}")
        if self.max is not None:
            parts.append(f"<= {self.max:g}")
        if self.max_change is not None:
            parts.append(f"within ±{self.max_change:.0%} of last {self.over_last}")
        return f"{self.metric} {' and '.join(parts)}"


class QualityConfig(_Model):
    """Metrics and checks."""

    metrics: list[MetricConfig] = Field(default_factory=list)
    checks: list[CheckConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _known(self) -> QualityConfig:
        names = [m.metric_name for m in self.metrics]
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise ValueError(f"two metrics are named '{name}'; give one a 'name'")
            seen.add(name)
        return self


# --- journal & write ---------------------------------------------------------------------------------


class JournalConfig(_Model):
    """SCD type 2: one row per version of each key, with validity interval and a hash of tracked columns."""

    keys: Columns
    track: list[str] | None = None
    order_by: str | None = None
    deletes: Literal["ignore", "close"] = "ignore"
    conflicts: Literal["quarantine", "fail"] = "quarantine"
    """Rows of one key at the same ``order_by`` time with different values: quarantined, or the run fails."""
    max_close_share: float = Field(default=0.5, gt=0, le=1)
    """The largest share of open keys one run may close (``deletes: close``); 1.0 allows any."""


class WriteConfig(_Model):
    """How the batch reaches the table."""

    mode: Literal["append", "overwrite", "merge", "journal"] = "append"
    keys: list[str] = Field(default_factory=list)
    partition_by: list[str] = Field(default_factory=list)


class TableConfig(_Model):
    """A destination table: where its data comes from and what happens on the way in."""

    table: TableName
    description: str = ""
    feature_set: str | None = None
    """``module:attribute`` of a FeatureSet that fills table, source, schema.columns, journal and
    write.mode where the file leaves them out."""
    source: Source
    schema_: SchemaConfig = Field(default_factory=SchemaConfig, alias="schema")
    cleanse: list[CleanseStep] = Field(default_factory=list)
    validate_: list[Rule] = Field(default_factory=list, alias="validate")
    quality: QualityConfig = Field(default_factory=QualityConfig)
    journal: JournalConfig | None = None
    write: WriteConfig = Field(default_factory=WriteConfig)

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> TableConfig:
        if not (info.context or {}).get("defer_consistency"):
            problems = self.consistency_problems()
            if problems:
                raise ValueError("; ".join(f"{path}: {message}" for path, message in problems))
        return self

    def consistency_problems(self) -> list[tuple[str, str]]:
        """Problems spanning several sections, as (path, message)."""
        problems = []
        if self.write.mode == "journal" and self.journal is None:
            problems.append(("journal", "write.mode is 'journal' but there is no 'journal' section"))
        if self.journal is not None and self.write.mode != "journal":
            problems.append(
                ("write.mode", f"a 'journal' section needs write.mode: journal (it is '{self.write.mode}')")
            )
        if self.write.mode == "merge" and not self.write.keys:
            problems.append(("write.keys", "write.mode 'merge' needs write.keys"))
        if isinstance(self.source, KafkaSource) and not self.schema_.columns:
            problems.append(
                ("schema.columns", "a kafka source needs schema.columns to parse its JSON values")
            )
        problems += self.column_name_problems()
        metrics = [m.metric_name for m in self.quality.metrics] + list(BUILTIN_METRICS)
        for i, check in enumerate(self.quality.checks):
            if check.metric not in metrics:
                hint = did_you_mean(check.metric, metrics)
                problems.append(
                    (
                        f"quality.checks[{i}].metric",
                        f"no metric '{check.metric}'{hint} (metrics: {', '.join(metrics)})",
                    )
                )
        return problems

    def column_name_problems(self) -> list[tuple[str, str]]:
        """The names the table would get that Delta refuses, each at the field that gives it: a declared
        column, a rename's new name, a step's new column. A declared name renamed before the write is
        only read, so it may hold any character."""
        given: dict[str, str] = {}  # a column the table would get -> where the config gives its name
        for name in self.schema_.columns or {}:
            given[name] = "schema.columns"
        for i, step in enumerate(self.cleanse):
            if isinstance(step, RenameStep):
                for old, new in step.columns.items():
                    given.pop(old, None)
                    given[new] = f"cleanse[{i}].columns"
            elif isinstance(step, SqlStep):
                given[step.column] = f"cleanse[{i}].column"
            elif isinstance(step, ParseTimestampStep) and step.output is not None:
                given[step.output] = f"cleanse[{i}].output"
        problems = []
        for name, where in given.items():
            problem = column_name_problem(name)
            if problem is not None:
                problems.append((where, problem))
        return problems

    def config_hash(self) -> str:
        """A short stable hash of the validated config (recorded with every commit)."""
        text = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def keys(self) -> list[str]:
        """The table's key columns (journal or merge), if any."""
        if self.journal is not None:
            return list(self.journal.keys)
        return list(self.write.keys)


class EtlSection(Section):
    """Where thimble-etl keeps its own tables."""

    metrics_table: str = "thimble_quality"
    quarantine_suffix: str = "_quarantine"


class EtlSettings(ThimbleSettings):
    """Thimble's shared settings plus the ``etl`` section."""

    etl: EtlSection = Field(default_factory=EtlSection)


# --- loading and error messages ----------------------------------------------------------------------

_UNION_TAGS: dict[str, tuple[str, list[type[BaseModel]]]] = {
    "source": ("type", [LandingSource, KafkaSource, TableSource, FilesSource]),
    "cleanse": ("step", [TrimStep, CaseStep, CastStep, ParseTimestampStep, FillStep, RegexReplaceStep, RenameStep, DropWhereStep, DedupeStep, SqlStep]),
    "validate": ("rule", [NotNullRule, UniqueRule, RangeRule, AllowedValuesRule, RegexRule, SqlRule]),
}  # fmt: skip


def _tags(field: str) -> tuple[str, dict[str, type[BaseModel]]]:
    key, models = _UNION_TAGS[field]
    return key, {m.model_fields[key].annotation.__args__[0]: m for m in models}  # type: ignore[union-attr]


def _clean_location(loc: tuple[int | str, ...], data: Any) -> tuple[list[int | str], Any]:
    """Drop the tag names pydantic inserts for tagged unions; return the path and the node it points at."""
    out: list[int | str] = []
    node = data
    for part in loc:
        if (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and part < len(node)
        ):
            node = node[part]  # type: ignore[index]
            out.append(part)
        elif isinstance(node, dict) and part in (node.get("step"), node.get("rule"), node.get("type")):
            continue  # the tag pydantic inserts for a tagged union
        else:
            out.append(part)
    return out, node


def _model_for(path: list[int | str], data: Any) -> type[BaseModel] | None:
    """The model whose fields live at ``path`` (through the tagged unions)."""
    model: type[BaseModel] | None = TableConfig
    union: tuple[str, dict[str, type[BaseModel]]] | None = None
    node = data
    for part in path:
        node = _child(node, part)
        if isinstance(part, int):
            if union is not None and isinstance(node, dict):
                model, union = union[1].get(str(node.get(union[0]))), None
            continue
        if model is None:
            return None
        fields = {f.alias or n: f for n, f in model.model_fields.items()}
        field = fields.get(part)
        if field is None:
            return None
        if part in _UNION_TAGS:
            union = _tags(part)
            if isinstance(node, dict):
                model, union = union[1].get(str(node.get(union[0]))), None
            continue
        model = _unwrap(field.annotation)
    return model


def _child(node: Any, part: int | str) -> Any:
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list) and isinstance(part, int) and part < len(node):
        return node[part]
    return None


def _unwrap(annotation: Any) -> Any:
    if isinstance(annotation, type):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _unwrap(arg)
        if isinstance(found, type) and issubclass(found, BaseModel):
            return found
    return None


def config_problems(error: ValidationError, data: Any) -> list[str]:
    """One ``path: reason`` line per pydantic error, with did-you-mean for unknown keys and tags."""
    problems: list[str] = []
    for item in error.errors(include_url=False):
        path, _ = _clean_location(tuple(item["loc"]), data)
        kind = item["type"]
        if kind == "extra_forbidden":
            parent = _model_for(path[:-1], data)
            names = [f.alias or n for n, f in parent.model_fields.items()] if parent else []
            problems.append(f"{format_location(path)}: unknown key{did_you_mean(str(path[-1]), names)}")
        elif kind == "union_tag_invalid":
            ctx = item.get("ctx", {})
            tag = str(ctx.get("tag", ""))
            key = str(ctx.get("discriminator", "")).strip("'")
            choices = [c.strip(" '") for c in str(ctx.get("expected_tags", "")).split(",")]
            problems.append(
                f"{format_location([*path, key])}: unknown {key} '{tag}'{did_you_mean(tag, choices)} "
                f"(one of: {', '.join(choices)})"
            )
        elif kind == "union_tag_not_found":
            key = str(item.get("ctx", {}).get("discriminator", "")).strip("'")
            problems.append(f"{format_location(path)}: missing '{key}'")
        elif kind == "missing":
            problems.append(f"{format_location(path)}: required")
        else:
            message = str(item["msg"]).removeprefix("Value error, ")
            problems.append(f"{format_location(path)}: {message}")
    return problems


def parse_table_config(data: Any, source: str | None = None) -> TableConfig:
    """Validate an already-parsed YAML document; raise :class:`ConfigError` listing every problem."""
    if not isinstance(data, dict):
        raise ConfigError(["the top level must be a mapping (table, source, ...)"], source=source)
    if data.get("feature_set") is not None:
        try:
            data = with_feature_set(data, import_feature_set(data["feature_set"]))
        except ValueError as exc:
            raise ConfigError([f"feature_set: {exc}"], source=source) from None
    try:
        config = TableConfig.model_validate(data, context={"defer_consistency": True})
    except ValidationError as exc:
        raise ConfigError(config_problems(exc, data), source=source) from None
    problems = config.consistency_problems()
    if problems:
        raise ConfigError([f"{path}: {message}" for path, message in problems], source=source)
    return config


def load_table_config(
    path: str | Path,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> TableConfig:
    """Read and validate a table config file.

    String values may hold ``${VAR}`` or ``${VAR:-default}``, filled from ``environ`` (default: the
    process environment; ``$$`` is a literal ``$``). ``overrides`` is merged into the file's mapping
    (nested mappings key by key, anything else replaced) before it is validated like the file.
    """
    file = Path(path)
    data, problems = substitute(read_yaml_file(file), os.environ if environ is None else environ)
    if problems:
        raise ConfigError(problems, source=str(file))
    if overrides:
        data = _merged(data, overrides)
    return parse_table_config(data, source=str(file) if not overrides else f"{file} (with overrides)")


def _merged(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        current = out.get(key)
        if isinstance(value, Mapping) and isinstance(current, dict):
            out[key] = _merged(current, value)
        else:
            out[key] = value
    return out
