"""The CLI's two streams: results on stdout (a stdout that cannot take them is one line, not a traceback) and, under
``--quiet``, no library chatter on stderr (Python warnings, torch's own log lines)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings
from collections.abc import Iterator

from .errors import OutputError


def emit(text: str) -> None:
    """Print ``text`` to stdout and flush; a full disk or closed pipe there is a one-line :class:`OutputError`.

    After a failure stdout points at ``/dev/null``, so that the unwritten rest is not retried (and reported again,
    with a traceback) when the interpreter exits.
    """
    try:
        print(text, flush=True)
    except OSError as exc:
        _drop_stdout()
        raise OutputError(
            f"cannot write the result to standard output ({exc.strerror or type(exc).__name__}); redirect it to a "
            f"file or pipe that takes it"
        ) from None


def _drop_stdout() -> None:
    try:
        fd = sys.stdout.fileno()
        null = os.open(os.devnull, os.O_WRONLY)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return
    os.dup2(null, fd)
    os.close(null)


@contextlib.contextmanager
def quiet_libraries(quiet: bool) -> Iterator[None]:
    """With ``quiet``, Python warnings and torch's log lines below ERROR are not printed while the block runs."""
    if not quiet:
        yield
        return
    torch_log = logging.getLogger("torch")
    level = torch_log.level
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch_log.setLevel(logging.ERROR)
        try:
            yield
        finally:
            torch_log.setLevel(level)
