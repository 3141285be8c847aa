"""What a saved model is: a typed function plus its context.

``@model`` turns ``def predict(ctx, rows: list[In]) -> list[Out]`` (or a DataFrame function with declared
``input=``/``output=`` schemas) into a :class:`ModelFunction`, a declaration: the registry saves it as a
:class:`ModelInfo` (the envelope: function reference, schemas, features, artifacts, sample, environment,
training data, metrics) with ``Registry.save``; loading gives back a :class:`LoadedModel` ready to run.
"""

from __future__ import annotations

import inspect
import math
import re
import sys
import typing
from collections import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, Field, FiniteFloat, TypeAdapter, ValidationError, field_validator

from thimble.common.errors import ConfigError
from thimble.common.features import NAME_PATTERN, TABLE_NAME, FeatureSet, check_name
from thimble.common.text import cut
from thimble.common.validation import validation_problems
from thimble.modelops._column_types import non_null_args, scalar_type
from thimble.modelops._column_types import numeric_fields as numeric_fields
from thimble.modelops._drift import Histogram
from thimble.modelops._names import MODEL_NAME, check_model_name, error_text, shown, shown_error
from thimble.modelops._training_spec import TrainingSetSpec
from thimble.modelops.errors import (
    InvalidNameError,
    ModelDefinitionError,
    PredictionError,
    SchemaMismatchError,
)

if TYPE_CHECKING:
    import pandas as pd

Flavor = Literal["rows", "frame"]


class FeatureSpec(BaseModel):
    """Online features: fields of the input filled from ``{prefix}:{feature_set}:{entity key}``.

    Saved with the model: the feature set's name, not its definition, so loading imports nothing more.
    """

    feature_set: str = Field(pattern=f"^{NAME_PATTERN.pattern}$")
    entity_key: str
    fields: list[str]
    defaults: dict[str, Any] = Field(default_factory=dict)


PICKLE_FILE = "function.pkl"
SAMPLE_FILE = "sample.json"
_SHA256 = r"^[0-9a-f]{64}$"


class FunctionRef(BaseModel):
    """How to get the function back: an import path, or a cloudpickle file when it is not importable."""

    import_path: str | None = Field(
        default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_.]*$"
    )
    pickle_file: Literal["function.pkl"] | None = None
    sha256: str | None = Field(default=None, pattern=_SHA256, description="of the pickle file")


class ArtifactInfo(BaseModel):
    # A file name inside the version's artifacts/ folder: never a path that leaves it.
    file: str = Field(pattern=r"^artifacts/[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}\.(joblib|cloudpickle)$")
    format: Literal["joblib", "cloudpickle"]
    type: str
    sha256: str = Field(pattern=_SHA256)
    bytes: int


# A warehouse table as thimble-etl names one ('name' or 'database.name'), at a Delta version (from 0).
_TRAINING_DATA = re.compile(rf"({TABLE_NAME.pattern})(?:@v?([0-9]{{1,18}}))?", re.ASCII)


class TrainingData(BaseModel):
    """A warehouse table and the version the model was trained on (``warehouse.t@v12``)."""

    table: str
    version: int | None = None

    @classmethod
    def parse(cls, text: str, what: str = "training_data") -> TrainingData:
        """``table``, ``database.table``, either with ``@v<version>`` (or ``@<version>``); else a
        :class:`ModelDefinitionError` naming ``what`` (the argument or flag it was given as)."""
        match = _TRAINING_DATA.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise ModelDefinitionError(
                f"{what} {shown(text)}: expected 'table' or 'table@v<version>' (a table is 'name' or "
                "'database.name': letters, digits and '_'), e.g. 'warehouse.client_features@v12'"
            )
        table, version = match.groups()
        return cls(table=table, version=int(version) if version is not None else None)

    def __str__(self) -> str:
        return self.table if self.version is None else f"{self.table}@v{self.version}"


class SavedContext(BaseModel):
    """The environment and provenance of a save."""

    python: str
    platform: str
    packages: dict[str, str]
    git_commit: str | None
    user: str
    host: str
    created_at: str
    training_data: TrainingData | None = None
    training_set: TrainingSetSpec | None = Field(default=None, description="see thimble.modelops.training")
    metrics: dict[str, FiniteFloat] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("metrics", mode="before")
    @classmethod
    def _drop_null_metrics(cls, value: Any) -> Any:
        # Version 0.1.0 wrote a NaN or infinite metric as null: read such a metric as absent,
        # so that the version still loads (saves now refuse those values).
        if isinstance(value, dict):
            return {k: v for k, v in value.items() if v is not None}
        return value


class ModelInfo(BaseModel):
    """The envelope of one immutable model version (``envelope.json`` in the registry)."""

    format_version: int = 1
    name: str = Field(pattern=f"^{MODEL_NAME.pattern}$")
    version: int = Field(ge=1)
    description: str = ""
    flavor: Flavor
    function: FunctionRef
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    features: FeatureSpec | None = None
    artifacts: dict[str, ArtifactInfo] = Field(default_factory=dict)
    sample_file: Literal["sample.json"] | None = None
    sample_sha256: str | None = Field(default=None, pattern=_SHA256)
    sample_rows: int = 0
    baseline: dict[str, Histogram] = Field(
        default_factory=dict, description="'input.<field>' / 'output.<field>'"
    )
    context: SavedContext

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass
class ModelContext:
    """What the model function gets as ``ctx``: its artifacts and who it is."""

    name: str
    version: int | None
    artifacts: Mapping[str, Any]
    info: ModelInfo | None = None
    params: dict[str, Any] = field(default_factory=dict)


def _where(fn: Callable[..., Any]) -> str:
    code = getattr(fn, "__code__", None)
    loc = f" ({code.co_filename}:{code.co_firstlineno})" if code else ""
    return f"{fn.__module__}.{fn.__qualname__}{loc}"


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _is_frame(tp: Any) -> bool:
    return getattr(tp, "__name__", None) == "DataFrame" and getattr(tp, "__module__", "").startswith("pandas")


def _list_item(tp: Any) -> Any:
    if typing.get_origin(tp) in (list, abc.Sequence):
        args = typing.get_args(tp)
        return args[0] if args else None
    return None


class ModelFunction:
    """A model function with its name, schemas and feature declaration (made by :func:`model`)."""

    def __init__(
        self,
        fn: Callable[..., Any],
        name: str,
        features: str | FeatureSet | None = None,
        entity_key: str | None = None,
        feature_fields: Sequence[str] | None = None,
        input: type[BaseModel] | None = None,
        output: type[BaseModel] | None = None,
        description: str | None = None,
        localns: dict[str, Any] | None = None,
    ) -> None:
        try:
            check_model_name(name)
        except InvalidNameError as exc:
            raise ModelDefinitionError(f"{exc} ({_where(fn)})") from None
        self.fn = fn
        self.name = name
        self.description = description if description is not None else inspect.getdoc(fn) or ""
        self.flavor, self.input_type, self.output_type = self._signature(fn, input, output, localns)
        self.features = self._features(features, entity_key, feature_fields)
        self.__wrapped__ = fn
        self.__doc__ = fn.__doc__
        self.__module__ = fn.__module__
        self.__qualname__ = fn.__qualname__
        self.__name__ = fn.__name__

    def _signature(
        self,
        fn: Callable[..., Any],
        input: type[BaseModel] | None,
        output: type[BaseModel] | None,
        localns: dict[str, Any] | None,
    ) -> tuple[Flavor, type[BaseModel], type[BaseModel]]:
        where = _where(fn)
        params = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if len(params) != 2:
            raise ModelDefinitionError(
                f"{where}: a model function takes (ctx, rows); it has {len(params)} positional parameters"
            )
        try:
            hints = typing.get_type_hints(fn, localns=localns)
        except Exception as exc:
            raise ModelDefinitionError(f"{where}: cannot resolve its type hints: {exc}") from None
        arg, ret = hints.get(params[1].name), hints.get("return")
        if arg is None or ret is None:
            raise ModelDefinitionError(
                f"{where}: annotate the rows parameter and the return type, e.g. (ctx, rows: list[In]) -> list[Out]"
            )
        in_item, out_item = _list_item(arg), _list_item(ret)
        if _is_model(in_item) and _is_model(out_item):
            if input or output:
                raise ModelDefinitionError(
                    f"{where}: input=/output= are for DataFrame functions; the type hints already say it"
                )
            return "rows", in_item, out_item
        if _is_frame(arg) and _is_frame(ret):
            if not (_is_model(input) and _is_model(output)):
                raise ModelDefinitionError(
                    f"{where}: a DataFrame model declares its schemas: @model(..., input=In, output=Out) with pydantic models"
                )
            assert input is not None
            assert output is not None
            return "frame", input, output
        raise ModelDefinitionError(
            f"{where}: rows must be list[In] and the return list[Out] with pydantic models In and Out "
            f"(or pandas DataFrames with input=/output= declared); got {arg!r} -> {ret!r}"
        )

    def _features(
        self,
        features: str | FeatureSet | None,
        entity_key: str | None,
        feature_fields: Sequence[str] | None,
    ) -> FeatureSpec | None:
        where = _where(self.fn)
        if features is None:
            if entity_key or feature_fields:
                raise ModelDefinitionError(
                    f"{where}: entity_key/feature_fields need features='<feature set>'"
                )
            return None
        names = list(self.input_type.model_fields)
        if isinstance(features, FeatureSet):
            feature_set, known = features.name, features.features
            key = entity_key or features.entity_key
            default_fields = [n for n in names if n in known]
        else:
            try:
                feature_set = check_name(features, "features=")
            except ConfigError as exc:
                raise ModelDefinitionError(f"{where}: {'; '.join(exc.problems)}") from None
            known, key = None, entity_key or names[0]
            default_fields = [n for n in names if n != key]
        fields = list(feature_fields) if feature_fields is not None else default_fields
        unknown = [f for f in [key, *fields] if f not in names]
        if unknown:
            raise ModelDefinitionError(
                f"{where}: {', '.join(unknown)} not fields of {self.input_type.__name__} ({', '.join(names)})"
            )
        if known is not None:
            outside = [f for f in fields if f not in known]
            if outside or not fields:
                detail = f"{', '.join(outside)} are not" if outside else "no field of the input is"
                raise ModelDefinitionError(
                    f"{where}: {detail} features of feature set {feature_set!r} ({', '.join(known)})"
                )
        defaults = {
            f: info.get_default(call_default_factory=True)
            for f in fields
            if not (info := self.input_type.model_fields[f]).is_required()
        }
        return FeatureSpec(feature_set=feature_set, entity_key=key, fields=fields, defaults=defaults)

    def __call__(self, ctx: ModelContext, rows: Any) -> Any:
        return self.fn(ctx, rows)

    def __repr__(self) -> str:
        return (
            f"<model {self.name}: {self.input_type.__name__} -> {self.output_type.__name__} ({self.flavor})>"
        )

    def bind(
        self, artifacts: Mapping[str, Any] | None = None, params: Mapping[str, Any] | None = None
    ) -> LoadedModel:
        """This function with artifacts, ready to predict without a registry (tests, notebooks)."""
        return LoadedModel(self, None, dict(artifacts or {}), dict(params or {}))


def model(
    name: str,
    *,
    features: str | FeatureSet | None = None,
    entity_key: str | None = None,
    feature_fields: Sequence[str] | None = None,
    input: type[BaseModel] | None = None,
    output: type[BaseModel] | None = None,
    description: str | None = None,
) -> Callable[[Callable[..., Any]], ModelFunction]:
    """Declare a model: ``@model(name="churn", features="client-features")`` on ``def predict(ctx, rows)``.

    ``features`` is the online feature set: a :class:`~thimble.common.features.FeatureSet` or its name.
    ``entity_key`` is the input field looked up (default: the feature set's entity key, or the first
    input field for a name); ``feature_fields`` the fields it fills (default: the input fields that are
    features of the set, or every other input field for a name). A field's default in the input model is
    the value used when the store has none. The saved model records the feature set's name.
    """

    def wrap(fn: Callable[..., Any]) -> ModelFunction:
        # Type hints may name classes local to the defining function: resolve them in its frame.
        localns = dict(sys._getframe(1).f_locals)
        return ModelFunction(
            fn, name, features, entity_key, feature_fields, input, output, description, localns
        )

    return wrap


def _frame_records(pdf: pd.DataFrame, *, nested_nulls: bool = True) -> list[dict[str, Any]]:
    """Records with ``None`` for missing values (pandas gives NaN, which int fields reject), nested ones
    too unless ``nested_nulls`` is false: Arrow gives an array column's values as numpy arrays, whose
    nulls are NaN."""
    frame = pdf if not pdf.isna().to_numpy().any() else pdf.astype(object).where(pdf.notna(), None)
    records: list[dict[str, Any]] = frame.to_dict("records")
    if not nested_nulls:
        return records
    nested = [c for c in pdf.columns if pdf[c].dtype == object and pdf[c].map(_is_nested).any()]
    for record in records:
        for c in nested:
            record[c] = _nested_nulls(record[c])
    return records


def _is_nested(value: Any) -> bool:
    return isinstance(value, np.ndarray | list | dict)


def _nested_nulls(value: Any) -> Any:
    """``value`` with numpy arrays as lists and NaN as ``None`` at any depth (a tuple, such as a Spark
    ``Row``, is left as it is)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, list):
        return [_nested_nulls(v) for v in value]
    if isinstance(value, dict):
        return {k: _nested_nulls(v) for k, v in value.items()}
    if isinstance(value, float) and value != value:
        return None
    return value


class LoadedModel:
    """A model function bound to its artifacts: validate inputs, run, check outputs."""

    def __init__(
        self,
        function: ModelFunction,
        info: ModelInfo | None,
        artifacts: dict[str, Any],
        params: dict[str, Any] | None = None,
        warnings: list[str] | None = None,
    ) -> None:
        self.function = function
        self.info = info
        self.name = info.name if info else function.name
        self.version = info.version if info else None
        self.context = ModelContext(
            self.name, self.version, artifacts, info, params or (dict(info.context.params) if info else {})
        )
        self.input_type = function.input_type
        self.output_type = function.output_type
        self.input_fields = list(self.input_type.model_fields)
        self.output_fields = list(self.output_type.model_fields)
        self.features = function.features
        self.environment_warnings = warnings or []
        self.rows_adapter: TypeAdapter[list[BaseModel]] = TypeAdapter(list[self.input_type])  # type: ignore[name-defined]
        self.outputs_adapter: TypeAdapter[list[BaseModel]] = TypeAdapter(list[self.output_type])  # type: ignore[name-defined]
        self._float_outputs, self._nested_outputs = _fields_with_floats(self.output_type)
        self._nullable_outputs = {
            f for f, info in self.output_type.model_fields.items() if _allows_none(info.annotation)
        }

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}" if self.version is not None else self.name

    def validate(self, records: Sequence[Any]) -> list[BaseModel]:
        """Input rows from dicts (or models); raises :class:`SchemaMismatchError` naming each bad field."""
        try:
            return self.rows_adapter.validate_python(records)
        except ValidationError as exc:
            raise SchemaMismatchError(
                f"input does not match {self.input_type.__name__}: "
                + "; ".join(validation_problems(exc)[:20])
            ) from None

    def split_valid(self, pdf: pd.DataFrame) -> tuple[pd.DataFrame, dict[int, str]]:
        """The rows of ``pdf`` whose input columns validate, and each other row's position with why not
        (its first problem: ``spend_7d: Input should be a valid number``, cut and escaped).

        A batch scores the valid rows and counts the others, rather than failing for one bad row.
        """
        cols = [c for c in self.input_fields if c in pdf.columns]
        records = _frame_records(pdf[cols])
        try:
            self.rows_adapter.validate_python(records)
        except ValidationError as exc:
            rejected: dict[int, str] = {}
            for error in exc.errors(include_url=False, include_input=False, include_context=False):
                loc, msg = shown_error(error)
                if loc and isinstance(loc[0], int) and loc[0] not in rejected:
                    field = ".".join(map(str, loc[1:])) or "row"
                    rejected[loc[0]] = f"{field}: {msg}"
            if not rejected:  # (every error of a list names its row: not expected)
                raise
            keep = [i not in rejected for i in range(len(pdf))]
            return pdf[keep].reset_index(drop=True), rejected
        return pdf, {}

    def run(self, rows: list[BaseModel]) -> list[BaseModel]:
        """Call the function on validated rows; check it returned one output per row."""
        if self.function.flavor == "frame":
            import pandas as pd

            frame = pd.DataFrame.from_records([r.__dict__ for r in rows], columns=self.input_fields)
            return self._frame_outputs(self._call(frame), len(rows))
        outputs = self._call(rows)
        if not isinstance(outputs, list) or len(outputs) != len(rows):
            got = f"{len(outputs)} outputs" if isinstance(outputs, list) else type(outputs).__name__
            raise PredictionError(
                f"model {self.ref} returned {got} for {len(rows)} rows; it must return a list with one output per row"
            )
        out_type = self.output_type
        for item in outputs:
            if type(item) is not out_type:
                return self._validate_outputs(outputs)
        return outputs

    def check_finite(self, outputs: list[BaseModel]) -> list[BaseModel]:
        """``outputs`` when every number in them is finite, else :class:`PredictionError` naming the first
        that is not: JSON has no NaN or infinity (a serialiser writes ``null``), and the output schema
        says number."""
        for i, out in enumerate(outputs):
            for f in self._float_outputs:
                v = getattr(out, f, None)
                if isinstance(v, float) and not math.isfinite(v):
                    raise self._not_finite(v, f, i)
            for f in self._nested_outputs:
                if has_nonfinite(getattr(out, f, None)):
                    raise self._not_finite(None, f, i)
        return outputs

    def check_finite_columns(self, columns: Mapping[str, Any], nan_is_null: bool = False) -> None:
        """:meth:`check_finite` over output columns (lists, or a frame's Series), vectorized over the
        plain float ones. A null is not a number; with ``nan_is_null`` (a frame model's output, which the
        server reads as it does) neither is a NaN in a field that may be null."""
        for f in self._float_outputs:
            values = columns[f]
            if not isinstance(values, list):
                values = values.to_numpy()
            skip_nan = nan_is_null and f in self._nullable_outputs
            try:
                numbers = np.asarray(values, dtype="float64")  # None as NaN
            except (TypeError, ValueError):  # not all numbers (pandas.NA, text): checked one by one
                numbers = np.asarray([v if isinstance(v, float) else 0.0 for v in values], dtype="float64")
            for i in np.flatnonzero(~np.isfinite(numbers)).tolist():
                if values[i] is None or (skip_nan and math.isnan(numbers[i])):
                    continue
                raise self._not_finite(float(numbers[i]), f, i)
        for f in self._nested_outputs:
            for i, v in enumerate(columns[f]):
                if has_nonfinite(v):
                    raise self._not_finite(None, f, i)

    def _not_finite(self, value: float | None, field: str, row: int) -> PredictionError:
        what = repr(value) if value is not None else "a NaN or infinite number"
        return PredictionError(
            f"model {self.ref} returned {what} {'for' if value is not None else 'in'} {field!r} of row "
            f"{row}: outputs must be finite numbers"
        )

    def _call(self, rows: Any) -> Any:
        try:
            return self.function.fn(self.context, rows)
        except Exception as exc:
            raised = cut(type(exc).__name__, 100)
            raise PredictionError(f"model {self.ref} raised {raised}: {error_text(exc)}") from exc

    def _validate_outputs(self, outputs: Any) -> list[BaseModel]:
        try:
            return self.outputs_adapter.validate_python(outputs)
        except ValidationError as exc:
            problems = "; ".join(validation_problems(exc)[:10])
            raise PredictionError(
                f"model {self.ref} returned outputs that are not {self.output_type.__name__}: {problems}"
            ) from None

    def _frame_outputs(self, out: Any, n: int) -> list[BaseModel]:
        frame = self._check_frame(out, n)
        # (a NaN in an output's list stays NaN: the model's failure, said by the finite check)
        return self._validate_outputs(_frame_records(frame, nested_nulls=False))

    def _check_frame(self, out: Any, n: int) -> pd.DataFrame:
        if not _is_frame(type(out)):
            raise PredictionError(
                f"model {self.ref} returned {type(out).__name__}; it must return a pandas DataFrame"
            )
        missing = [c for c in self.output_fields if c not in out.columns]
        if missing or len(out) != n:
            raise PredictionError(
                f"model {self.ref} returned {len(out)} rows with columns {cut(str(list(out.columns)), 300, count=True)}; "
                f"expected {n} rows with {self.output_fields}"
            )
        return out[self.output_fields]

    def predict(self, records: Sequence[Any]) -> list[dict[str, Any]]:
        """Validate, run and return plain dicts (one per input row)."""
        outputs = self.run(self.validate(records))
        return [o.model_dump(mode="json") for o in outputs]

    def predict_frame(self, pdf: pd.DataFrame) -> pd.DataFrame:
        """Run on a DataFrame holding the input columns; return a DataFrame of the output columns.

        A NaN or infinite output is the model's failure (:meth:`check_finite_columns`), as when served.
        """
        import pandas as pd

        missing = [
            c
            for c in self.input_fields
            if c not in pdf.columns and self.input_type.model_fields[c].is_required()
        ]
        if missing:
            raise SchemaMismatchError(f"input is missing columns {missing} of {self.input_type.__name__}")
        if self.function.flavor == "frame":
            frame = self._check_frame(
                self._call(pdf[[c for c in self.input_fields if c in pdf.columns]]), len(pdf)
            ).reset_index(drop=True)
            self.check_finite_columns(frame, nan_is_null=True)
            return frame
        cols = [c for c in self.input_fields if c in pdf.columns]
        outputs = self.run(self.validate(_frame_records(pdf[cols])))
        columns = {f: [getattr(o, f) for o in outputs] for f in self.output_fields}
        self.check_finite_columns(columns)
        return pd.DataFrame(columns)


def has_nonfinite(value: Any) -> bool:
    """Whether ``value`` holds NaN or an infinity anywhere (in a list, a dict, a pydantic model)."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, BaseModel):
        return any(has_nonfinite(v) for v in value.__dict__.values())
    if isinstance(value, dict):
        return any(has_nonfinite(v) for v in value.values())
    if isinstance(value, list | tuple | set | frozenset):
        return any(has_nonfinite(v) for v in value)
    return False


def _allows_none(annotation: Any) -> bool:
    return annotation is None or type(None) in typing.get_args(annotation)


def _fields_with_floats(model: type[BaseModel]) -> tuple[list[str], list[str]]:
    """The fields of ``model`` that may hold a float: plain ``float`` ones, and the others (nested)."""
    plain, nested = [], []
    for name, info in model.model_fields.items():
        args = non_null_args(info.annotation)
        if args == [float]:
            plain.append(name)
        elif not (len(args) == 1 and scalar_type(args[0]) in (bool, int, str)):
            nested.append(name)
    return plain, nested


def json_integers(value: Any) -> Any:
    """``value`` with integral floats (``3.0``) as ints: JSON Schema counts them as integers, as JSON does."""
    if type(value) is float:
        return int(value) if value.is_integer() and abs(value) < 2**53 else value
    if isinstance(value, dict):
        return {k: json_integers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_integers(v) for v in value]
    return value


def reference_of(function: ModelFunction) -> str | None:
    """``module:qualname`` when the function can be imported back by that path in a fresh process."""
    import importlib.machinery

    module = function.fn.__module__
    if module == "__main__" or "<locals>" in function.fn.__qualname__:
        return None
    top = module.split(".", 1)[0]
    if importlib.machinery.PathFinder.find_spec(top, sys.path) is None:
        return None
    mod = sys.modules.get(module)
    target: Any = mod
    for part in function.fn.__qualname__.split("."):
        target = getattr(target, part, None)
    return f"{module}:{function.fn.__qualname__}" if target is function else None
