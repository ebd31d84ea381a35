"""The error hierarchy. Messages are one line: the problem, the value, the fix. Only the CLI maps them to exit codes."""


class MuseError(Exception):
    """Base class for user-facing errors (bad input, bad config); the CLI prints them and exits with code 2."""


class ConfigError(MuseError):
    """An option or config value is invalid."""


class InputError(MuseError):
    """An input file is missing, unreadable or lacks required metadata."""


class WeightsError(MuseError):
    """A weights file is missing, corrupt or does not fit the model."""


class BackendUnavailable(MuseError):
    """A requested backend (reader, engine, kernel) cannot run here."""


class OutputError(MuseError):
    """The output folder cannot be used: not a folder, no permission, read-only, full, busy or holding other results."""


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (or just ``Type``): a library's exception, fit for a one-line report."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
