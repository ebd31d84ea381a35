"""Outputs are only ever regular files: what may stand at a path muse-fast writes, and how to open one safely.

A symbolic link, folder, FIFO, socket or device node at an output path is refused in one line (never followed,
truncated, replaced or removed): a link in a shared output folder would make the run write wherever it points, a FIFO
would block it, and a rename over a device node turns the node into a file. Paths are checked with ``lstat`` before
any work, and files are created with ``O_CREAT | O_EXCL``, so what appears in between is not followed either.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import IO

from ..errors import OutputError


def kind(path: str | Path) -> str | None:
    """What stands at ``path`` when it is not a regular file ("a symbolic link", "a FIFO", ...); None when it is one
    or nothing is there."""
    try:
        return mode_kind(os.lstat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return None


def mode_kind(mode: int) -> str | None:
    """What a file of ``st_mode`` ``mode`` is, in words, when it is not a regular file; None when it is one."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device node"
    return "a special file"


def not_regular_error(path: str | Path, found: str, role: str = "an output of muse-fast") -> OutputError:
    path = Path(path)
    return OutputError(
        f"{path.name} in {path.parent} is {found}, not a regular file, and it is the name of {role}; muse-fast writes "
        f"only regular files and never follows links: remove it (a link only, not what it points to) or pass another "
        f"--out"
    )


def check_regular(path: str | Path, role: str = "an output of muse-fast") -> None:
    """Raise :class:`OutputError` when ``path`` exists and is not a regular file (``role`` says what we keep there)."""
    found = kind(path)
    if found is not None:
        raise not_regular_error(path, found, role)


def check_folder(path: str | Path, role: str) -> None:
    """Raise :class:`OutputError` when ``path`` exists and is not a folder itself (a link to one is refused too)."""
    if is_folder(path) or not os.path.lexists(path):
        return
    path = Path(path)
    found = kind(path) or "a file"
    raise OutputError(
        f"{path.name} in {path.parent} is {found}, and it is the name of {role}; muse-fast never follows links in "
        f"its output folder: remove it (a link only, not what it points to) or pass another --out"
    )


def is_folder(path: str | Path) -> bool:
    """``path`` is a folder itself (not a link to one)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def same_file(a: str | Path, b: str | Path) -> bool:
    """``a`` and ``b`` name one existing file (a hard link, another path to it); False when either is missing."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def is_regular(path: str | Path) -> bool:
    """``path`` is a regular file itself (not a link to one)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def exclusive(mode: str) -> str:
    """``mode`` ("w", "wb", ...) as exclusive creation: ``open`` then fails on any existing path, a link included
    (``O_CREAT | O_EXCL`` never follows one)."""
    if not mode.startswith("w"):
        raise ValueError(f"only new files are written this way, got mode {mode!r}")
    return "x" + mode[1:]


def open_new(path: str | Path, mode: str = "wb") -> IO:
    """Create ``path``, which must not exist (not even as a link), and open it for writing in ``mode``."""
    return open(path, exclusive(mode), newline="" if "b" not in mode else None)


def new_file_refused(folder: Path, name: str) -> OSError | None:
    """Why ``folder`` takes no new file (read-only, immutable, no permission, ``/proc``), or None when it does: a
    hidden probe ``.<name>.<pid>.probe`` is made there, never through a link, and removed."""
    probe = Path(folder) / f".{name}.{os.getpid()}.probe"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
    except OSError as exc:
        return exc
    os.unlink(probe)
    return None
