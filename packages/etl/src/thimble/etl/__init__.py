"""thimble-etl: config-driven Spark jobs that cleanse, validate, measure and journalize data into Delta tables."""

from thimble.etl.__about__ import __version__
from thimble.etl._feature_sets import feature_set_config
from thimble.etl.config import EtlSettings, TableConfig, load_table_config, parse_table_config
from thimble.etl.errors import EtlError, SchemaMismatchError, SourceError, TableNotFoundError
from thimble.etl.history import TableVersion, blocked_runs, changes, history, table_version
from thimble.etl.quality import CheckResult
from thimble.etl.runner import RunResult, run_table, write_dataframe

__all__ = [
    "CheckResult",
    "EtlError",
    "EtlSettings",
    "RunResult",
    "SchemaMismatchError",
    "SourceError",
    "TableConfig",
    "TableNotFoundError",
    "TableVersion",
    "__version__",
    "blocked_runs",
    "changes",
    "feature_set_config",
    "history",
    "load_table_config",
    "parse_table_config",
    "run_table",
    "table_version",
    "write_dataframe",
]
