"""Check a regular expression with the engine Spark runs: Java's ``java.util.regex.Pattern``.

Java and Python disagree on valid syntax (``\\p{Lower}``, ``[a-z&&[^e]]`` are Java only; ``(?P<name>...)``
is Python only), so a pattern is compiled by a JVM: the running Spark session's when there is one,
else a small JVM started once per process (no Spark job, under a second).
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import threading
from pathlib import Path
from typing import Any

# What Python users write that Java spells differently.
_PYTHON_ONLY = {
    "(?P<": "Java names a group (?<name>...), not (?P<name>...)",
    "(?P=": "Java refers back to a named group with \\k<name>, not (?P=name)",
    "(?#": "Java has no (?#...) comments",
}

_lock = threading.Lock()
_jvm: Any = None


def java_regex_problem(pattern: str) -> str | None:
    """Why Spark (Java) cannot compile ``pattern``, or ``None`` when it can."""
    from py4j.protocol import Py4JJavaError
    from pyspark.errors.exceptions.captured import CapturedException

    hints = [hint for python, hint in _PYTHON_ONLY.items() if python in pattern]
    try:
        jvm = _java()
    except OSError:  # no Java here: catch what Python users commonly write, Spark checks the rest
        return f"not a valid regular expression for Spark (Java syntax): {hints[0]}" if hints else None
    try:
        jvm.java.util.regex.Pattern.compile(pattern)
    except Py4JJavaError as exc:
        error = exc.java_exception
    except CapturedException as exc:  # a Spark session's gateway converts Java exceptions
        if exc._origin is None:
            raise
        error = exc._origin
    else:
        return None
    reason = f"{error.getDescription()} at position {error.getIndex()}"
    return "; ".join([f"not a valid regular expression for Spark (Java syntax): {reason}", *hints])


def _java() -> Any:
    """The JVM of the running Spark session, else this module's own small one."""
    global _jvm
    from pyspark import SparkContext

    if SparkContext._jvm is not None:
        return SparkContext._jvm
    with _lock:
        if _jvm is None:
            _jvm = _start_jvm()
        return _jvm


def _start_jvm() -> Any:
    from py4j.java_gateway import GatewayParameters, JavaGateway, launch_gateway

    port, token = launch_gateway(
        classpath=_py4j_jar(),
        java_path=_java_executable(),
        javaopts=["-Xmx32m", "-XX:TieredStopAtLevel=1", "-Xshare:auto"],
        die_on_exit=True,
        enable_auth=True,
    )
    gateway = JavaGateway(gateway_parameters=GatewayParameters(port=port, auth_token=token))
    atexit.register(gateway.shutdown)
    return gateway.jvm


def _py4j_jar() -> str:
    import pyspark

    jars = sorted(glob.glob(str(Path(pyspark.__file__).parent / "jars" / "py4j-*.jar")))
    if not jars:
        raise RuntimeError("pyspark ships no py4j jar")
    return jars[-1]


def _java_executable() -> str:
    home = os.environ.get("JAVA_HOME")
    candidates = [Path(home)] if home else []
    candidates += sorted(Path("/usr/lib/jvm").glob("java-17-openjdk*"))
    for candidate in candidates:
        java = candidate / "bin" / "java"
        if java.is_file():
            return str(java)
    return shutil.which("java") or "java"
