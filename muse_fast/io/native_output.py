"""What native libraries print, captured instead of flooding the terminal.

libjpeg, libtiff and OpenSlide write to file descriptor 2 and cuCIM's decoder to file descriptor 1, directly (a
damaged slide makes them print a line or two per tile). While :func:`capture_native_output` is active, both
descriptors point at one temporary file, and Python's own ``sys.stdout``/``sys.stderr`` (results, logging,
progress bars, errors) keep the terminal. Readers look at what was printed during a read (:meth:`NativeLog.since`)
to notice decode failures that a backend does not raise.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError
from typing import TypeVar

from ..errors import one_line

# libjpeg/libjpeg-turbo ("Corrupt JPEG data", "Bogus marker", "Unsupported marker type"), cuCIM ("ERROR in line"),
# libtiff/OpenJPEG ("Error", "TIFFReadEncodedTile"), zlib ("invalid ... code").
DECODE_ERROR = re.compile(
    r"corrupt|bogus|unsupported marker|premature end|error|invalid (?:code|block|distance)|"
    r"not a jpeg|huffman|truncat|failed to decode|decod\w* fail",
    re.IGNORECASE,
)
_LIBC = ctypes.CDLL(None)
T = TypeVar("T")


class NativeLog:
    """Everything written to fds 1 and 2 while the capture is active, readable from any thread."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="muse-fast-native-")

    def offset(self) -> int:
        _LIBC.fflush(None)  # C stdio buffers output to a file: flush so that what was printed is visible
        return os.fstat(self._file.fileno()).st_size

    def since(self, offset: int) -> str:
        """Text printed after ``offset`` (from :meth:`offset`)."""
        size = self.offset()
        return os.pread(self._file.fileno(), max(0, size - offset), offset).decode("utf-8", "replace")


def decode_errors(text: str) -> list[str]:
    """The lines of native output that report a decode failure."""
    return [line.strip() for line in text.splitlines() if DECODE_ERROR.search(line)]


def checked_read(read: Callable[..., T], *args) -> tuple[T | None, str | None]:
    """``(read(*args), None)``, or ``(None, why)`` when the read raised or a decoder complained on fds 1/2 meanwhile.

    Decoder complaints are seen only while :func:`capture_native_output` is active.
    """
    log = active_log()
    mark = log.offset() if log is not None else 0
    try:
        result = read(*args)
    except CancelledError:
        raise  # the run is stopping (an error elsewhere or Ctrl-C): not damaged data, nothing to read again
    except Exception as exc:  # noqa: BLE001 - every backend raises its own decoder errors
        return None, one_line(exc)
    errors = decode_errors(log.since(mark)) if log is not None else []
    if errors:
        return None, errors[-1]  # the last line is the decoder's own message (cuCIM prefixes one)
    return result, None


_lock = threading.Lock()
_active: NativeLog | None = None


def active_log() -> NativeLog | None:
    """The log of the capture in force, if any."""
    return _active


class _Redirect:
    """Points ``fd`` at ``target``; moves the Python stream that wrote to ``fd`` onto a duplicate of the original."""

    def __init__(self, fd: int, name: str, target: int) -> None:
        self.fd, self.name = fd, name
        stream = getattr(sys, name)
        stream.flush()
        self.saved = os.dup(fd)
        self.old_stream = stream
        self.moved = _writes_to(stream, fd)
        if self.moved:
            raw = io.FileIO(self.saved, "w", closefd=False)
            new = io.TextIOWrapper(raw, encoding=stream.encoding, line_buffering=True)
            setattr(sys, name, new)
            _repoint_handlers(stream, new)
        os.dup2(target, fd)

    def undo(self) -> None:
        _LIBC.fflush(None)
        if self.moved:
            current = getattr(sys, self.name)
            current.flush()
            _repoint_handlers(current, self.old_stream)
            setattr(sys, self.name, self.old_stream)
        os.dup2(self.saved, self.fd)
        os.close(self.saved)


def _writes_to(stream, fd: int) -> bool:
    try:
        return stream.fileno() == fd
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return False


def _repoint_handlers(old, new) -> None:
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, logging.StreamHandler) and handler.stream is old:
                handler.setStream(new)


@contextlib.contextmanager
def capture_native_output() -> Iterator[NativeLog]:
    """Send what native code prints on fds 1 and 2 to a :class:`NativeLog` (re-entrant: inner calls share it)."""
    global _active
    with _lock:
        if _active is not None:
            outer = _active
        else:
            outer = None
            log = NativeLog()
            _LIBC.fflush(None)
            redirects = [_Redirect(fd, name, log._file.fileno()) for fd, name in ((1, "stdout"), (2, "stderr"))]
            _active = log
    if outer is not None:
        yield outer
        return
    try:
        yield log
    finally:
        with _lock:
            _active = None
            for redirect in reversed(redirects):
                redirect.undo()
            log._file.close()
