"""Errors Thimble shows to its users: each carries a message meant to be read, not a traceback."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class ThimbleError(Exception):
    """Base class of every error a Thimble command reports to its user as a plain message."""

    exit_code = 2


class ConfigError(ThimbleError):
    """A configuration file, environment variable or flag is invalid."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"Invalid configuration{where}:\n{lines}")


class ServiceUnavailableError(ThimbleError):
    """A service Thimble needs (Kafka, Redis, Spark) could not be reached."""


@dataclass(frozen=True)
class SparkFailure:
    """Why a Spark job failed, told for its user: one line, and the user's text it quotes."""

    reason: str
    """Spark's reason on one line, without JVM frames, SQL states or our own call sites."""
    condition: str | None = None
    """Spark's error condition (``CAST_INVALID_INPUT``), when it has one."""
    parameters: Mapping[str, str] = field(default_factory=dict)
    quoted: tuple[str, ...] = ()
    """The user's SQL or pattern the failure points at, to find it in their config."""


_SQLSTATE = re.compile(r"\s*SQLSTATE: \w+\.?")
_CONDITION = re.compile(r"^\[([A-Z0-9_.]+)\]\s*")
_PATTERN_CAUSE = re.compile(r"Caused by: java\.util\.regex\.PatternSyntaxException: (.+?) near index (-?\d+)")


def spark_failure(exc: BaseException) -> SparkFailure | None:
    """Describe a PySpark or Py4J exception for a user; ``None`` when ``exc`` comes from neither."""
    get_condition = getattr(exc, "getCondition", None)
    if callable(get_condition) and callable(getattr(exc, "getMessage", None)):
        return _pyspark_failure(exc)
    if hasattr(exc, "java_exception"):
        return _java_failure(exc)
    if type(exc).__module__.startswith("py4j"):
        return SparkFailure("the connection to Spark's JVM was lost (did it run out of memory?)")
    return None


def _one_line(text: str) -> str:
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return _SQLSTATE.sub("", first).strip()


def _python_worker_failure(text: str) -> str | None:
    """What a Python worker (a UDF, ``mapInPandas``) raised, as its traceback's last line says, without
    the exception's module: ``ValueError: ...``; ``None`` when ``text`` quotes no Python traceback."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    if not starts:
        return None
    raised = None
    for line in lines[starts[-1] + 1 :]:
        if line.startswith(("JVM stacktrace", "\tat ")):
            break
        if line.strip() and not line[0].isspace():
            raised = line.strip()
    if raised is None:
        return None
    kind, sep, message = raised.partition(": ")
    kind = kind.rsplit(".", 1)[-1]
    return f"{kind}: {message}" if sep else kind


def _pyspark_failure(exc: Any) -> SparkFailure:
    condition = exc.getCondition()
    if condition is None:
        raised = _python_worker_failure(str(exc))
        if raised is not None:
            return SparkFailure(f"a Python worker raised {raised}")
    reason = _CONDITION.sub("", _one_line(_message(exc)))
    quoted: list[str] = []
    for context in exc.getQueryContext() or []:
        if context.contextType().name == "SQL" and context.fragment():
            quoted.append(str(context.fragment()))
    text = str(exc)
    if "== SQL ==" in text:  # a parse error quotes the whole statement
        statement = text.split("== SQL ==", 1)[1].strip().splitlines()
        if statement:
            quoted.append(statement[0])
    parameters = dict(exc.getMessageParameters() or {})
    if condition == "INVALID_PARAMETER_VALUE.PATTERN":
        pattern_failure = _pattern_failure(parameters.get("value", ""), text)
        if pattern_failure is not None:
            return pattern_failure
    return SparkFailure(
        f"{condition}: {reason}" if condition else reason, condition, parameters, tuple(quoted)
    )


def _message(exc: Any) -> str:
    """The exception's message. In process, PySpark renders it with Spark's own error classes, which
    lack the classes of Delta Lake and other extensions: their exceptions' text is used instead."""
    try:
        return str(exc.getMessage())
    except Exception:
        return str(exc)


def _pattern_failure(quoted_pattern: str, text: str) -> SparkFailure | None:
    """A regular expression Java refused, told as in process, from the error Spark Connect sends (the
    pattern among its parameters, Java's reason in the server's trace)."""
    cause = _PATTERN_CAUSE.search(text)
    if cause is None:
        return None
    pattern = quoted_pattern[1:-1] if quoted_pattern[:1] == quoted_pattern[-1:] == "'" else quoted_pattern
    return SparkFailure(
        f"not a valid regular expression for Spark (Java): {cause.group(1)} at position {cause.group(2)} "
        f"of {pattern!r}",
        quoted=(pattern,),
    )


def _java_failure(exc: Any) -> SparkFailure:
    try:
        root = exc.java_exception
        while root.getCause() is not None and root.getCause() != root:
            root = root.getCause()
        kind = str(root.getClass().getName())
        if kind == "java.util.regex.PatternSyntaxException":
            pattern = str(root.getPattern())
            return SparkFailure(
                f"not a valid regular expression for Spark (Java): {root.getDescription()} at "
                f"position {root.getIndex()} of {pattern!r}",
                quoted=(pattern,),
            )
        message = _one_line(str(root.getMessage() or ""))
        condition = _CONDITION.match(message)
        return SparkFailure(
            f"{kind.rsplit('.', 1)[-1]}: {message}", condition=condition.group(1) if condition else None
        )
    except Exception:  # the JVM may be gone: say so rather than fail while describing
        return SparkFailure("Spark's JVM failed: " + _one_line(str(exc).split(": ", 1)[-1]))
