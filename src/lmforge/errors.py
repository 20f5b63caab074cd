"""User-facing error types. The CLI prints their message without a traceback."""


class LmforgeError(Exception):
    """User-facing; the CLI prints the message and exits 1."""

    exit_code = 1


class ConfigError(LmforgeError):
    """A config file, preset or flag is wrong; the CLI exits 2."""

    exit_code = 2


class UsageError(LmforgeError):
    """A command was called wrongly (bad flag combination, missing argument); exits 2."""

    exit_code = 2


class CheckpointError(LmforgeError):
    """A checkpoint or model directory is missing, corrupt or does not fit the config."""


class DataError(LmforgeError):
    """An input file or column cannot be read or does not hold what was asked for."""
