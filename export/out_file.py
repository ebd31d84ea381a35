"""``muse-fast export --out``: checked before the export runs, so that a path we cannot or must not write is refused
in one line instead of after minutes of work, and nothing but a regular file is ever replaced."""

from __future__ import annotations

import os
from pathlib import Path

from muse_fast.errors import OutputError
from muse_fast.output.regular import kind, new_file_refused, same_file


def check_export_out(path: Path, flag: str = "--out", overwrite: bool = False, inputs: tuple[Path, ...] = ()) -> None:
    """Refuse ``path`` unless it is a new file (or, with ``overwrite``, a regular file other than one of ``inputs``,
    the files the export reads) in a folder we can write (probed with a hidden file).

    An existing file is the user's until they say otherwise (``--overwrite``). A symlink, folder, FIFO, socket or
    device node at ``path`` is refused (never followed or replaced), as are an empty path, a path under a file, and a
    folder that refuses new files (read-only, ``/proc``).
    """
    text = os.fspath(path)
    if not text.strip() or Path(text).name in ("", ".", ".."):
        raise OutputError(f"{flag} {text!r} names no file; pass a file path such as model.onnx")
    path = Path(text)
    try:
        found = kind(path)  # lstat: a link is never followed; None when missing or under a file (said below)
    except OSError as exc:
        raise OutputError(f"{flag} {path} cannot be used ({exc.strerror}); pass a writable file path") from None
    if found:
        raise OutputError(
            f"{flag} {path} is {found}, not a regular file; export writes only regular files and never replaces "
            f"anything else: pass a new file path such as model.onnx"
        )
    if found is None and os.path.lexists(path) and not overwrite:
        raise OutputError(f"{flag} {path} already exists; pass --overwrite to replace it, or another path")
    for source in inputs:
        if same_file(path, source) or os.path.abspath(path) == os.path.abspath(source):
            raise OutputError(f"{flag} {path} is the weights file the export reads; pass another path")
    folder = path.parent
    while not os.path.lexists(folder) and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"{flag} {path} is under {folder}, which is a file, not a folder; pass another path")
    refused = new_file_refused(folder, path.name)
    if refused is not None:
        raise OutputError(
            f"{flag} {path} cannot be written: {folder} refuses new files ({refused.strerror}); pass a writable folder"
        )
