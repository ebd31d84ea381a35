"""The output folder: create it, and turn the operating system's errors about it into one line with the fix."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import OutputError

# Errors that describe the output folder. Others (EIO while reading a slide, PIL's errno-less "truncated") pass through.
FOLDER_ERRNOS = {errno.EEXIST, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


def describe(exc: OSError, out_dir: Path) -> str:
    """One line: what went wrong with ``out_dir`` and what to do."""
    ancestor = exc.filename and Path(os.path.abspath(exc.filename)) in Path(os.path.abspath(out_dir)).parents
    where = f" ({exc.filename})" if ancestor else ""  # a parent being created; files inside need no name
    if exc.errno in (errno.EEXIST, errno.ENOTDIR):
        return f"--out {out_dir} is not a folder: a file is in the way{where}; pass a folder path to --out"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"cannot write in --out {out_dir}: permission denied{where}; pass a folder you can write to"
    if exc.errno == errno.EROFS:
        return f"cannot write in --out {out_dir}: the file system is read-only; pass a folder on a writable disk"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"no space left for --out {out_dir}{where}; free some space or pass --out on another disk, then rerun "
            f"(finished batches are kept; temporary files were removed)"
        )
    return f"cannot use --out {out_dir}: {exc.strerror or exc}{where}; pass a folder you can write to"


def _about_folder(exc: OSError, out_dir: Path) -> bool:
    """Is ``exc`` about ``out_dir`` (the folder, a file in it, a parent being created) or a full disk?"""
    if exc.filename is None:  # write() and close() on a full disk name no file
        return exc.errno in FOLDER_ERRNOS
    name, target = Path(os.path.abspath(exc.filename)), Path(os.path.abspath(out_dir))
    return name == target or target in name.parents or name in target.parents


@contextlib.contextmanager
def output_errors(out_dir: str | Path) -> Iterator[None]:
    """Re-raise the operating system's errors about ``out_dir`` (and a full disk) as a one-line :class:`OutputError`."""
    out_dir = Path(out_dir)
    try:
        yield
    except OSError as exc:
        if not _about_folder(exc, out_dir):
            raise
        raise OutputError(describe(exc, out_dir)) from None


def prepare_out_dir(out_dir: str | Path) -> Path:
    """Create ``out_dir`` and check that files can be created in it; one-line :class:`OutputError` otherwise."""
    out_dir = Path(out_dir)
    with output_errors(out_dir):
        if out_dir.exists() and not out_dir.is_dir():
            raise FileExistsError(errno.EEXIST, "not a folder", str(out_dir))
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".muse-fast-probe.", dir=out_dir)
        os.close(fd)
        os.unlink(probe)
    return out_dir


@contextlib.contextmanager
def out_dir_for_run(out_dir: str | Path) -> Iterator[Path]:
    """:func:`prepare_out_dir`; if the run then fails, the folders it created are removed again while they are still
    empty, so a refused run leaves nothing behind (a folder that holds anything, checkpoints to resume say, stays)."""
    out_dir = Path(out_dir)
    created = []
    folder = out_dir.absolute()  # not normalised: mkdir creates 'new' in 'new/../out' too
    while not os.path.lexists(folder) and folder != folder.parent:
        if folder.name not in (".", ".."):
            created.append(folder)  # deepest first
        folder = folder.parent
    try:
        prepare_out_dir(out_dir)
        yield out_dir
    except BaseException:
        for folder in created:
            try:
                folder.rmdir()  # only an empty folder; never anything the run or anyone else put there
            except OSError:
                break
        raise
