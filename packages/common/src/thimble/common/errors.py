"""Errors Thimble shows to its users: each carries a message meant to be read, not a traceback."""


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
