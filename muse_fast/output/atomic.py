"""Write-to-temp-then-rename, so that a crash never leaves a half-written output under its final name.

Temporary names are hidden and unique per process (``.NAME.<pid>.partial``), so two processes never write into the
same temporary file. They are created with ``O_CREAT | O_EXCL`` (never through a link) and renamed only over a
regular file or nothing (:mod:`muse_fast.output.regular`). Cleanup never raises (it must run even when the disk is
full), and :func:`remove_stale_partials` removes what a killed process left behind (regular files only).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO

from ..errors import OutputError
from .regular import check_regular, exclusive, is_regular, kind, not_regular_error, same_file


def partial_path(path: str | Path) -> Path:
    """The hidden temporary name beside ``path`` (``.NAME.<pid>.partial``) that is renamed to ``path`` when complete."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.partial")


def remove_quietly(path: str | Path) -> None:
    """Remove a file if it is there; never raises, so cleanup after a failure (ENOSPC, EACCES) cannot fail too."""
    try:
        Path(path).unlink(missing_ok=True)
    except OSError:
        pass


UNLOCKED_STALE_S = 3600.0  # see remove_stale_partials' dead_only


def remove_stale_partials(folder: Path, names: Iterable[str], dead_only: bool = False) -> list[Path]:
    """Remove the temporary files of ``names`` in ``folder`` left by any process, of this version or older ones.

    ``dead_only``, for writers that hold no lock on the folder: only those whose process does not run here and that
    were last written over :data:`UNLOCKED_STALE_S` ago; a process in another container or on another machine that
    shares the folder has a pid this machine does not know, and its file must not go while it runs."""
    names = list(names)
    if not names:
        return []
    listed = "|".join(re.escape(n) for n in names)
    # .NAME.pid.partial, and ..NAME.pid.partial.pid.partial (a temporary file's own, as adapt wrote before 2026-12-07)
    pattern = re.compile(rf"\.(?:\.(?:{listed})\.\d+\.partial|{listed})(\.(\d+))?\.partial")
    try:
        found = [(p, pattern.fullmatch(p.name)) for p in Path(folder).iterdir()]
    except OSError:
        return []
    stale = [p for p, m in found if m and is_regular(p) and not (dead_only and _maybe_live(p, m[2]))]
    for p in stale:
        remove_quietly(p)
    return stale


def _maybe_live(path: Path, pid: str | None) -> bool:
    """Whether the temporary file ``path`` (of process ``pid``) may still be written: its process runs here, or it
    changed within :data:`UNLOCKED_STALE_S`."""
    if pid and process_runs(int(pid)):
        return True
    try:
        return time.time() - path.stat().st_mtime < UNLOCKED_STALE_S
    except OSError:
        return True


def process_runs(pid: int) -> bool:
    """Whether a process with this id exists (ours or another user's)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process, or no pid we could have written: keep it
        return True
    return True


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM held until the block ends, then handled as they would have been (Ctrl-C raises
    KeyboardInterrupt there). For writers such as ``torch.save``, which turn an interrupt raised inside them into an
    unrelated RuntimeError. Only the main thread receives signals; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {
        s: signal.signal(s, lambda signum, _frame: caught.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if caught:
            signal.raise_signal(caught[0])  # to the handler just put back


def _open(path: Path, mode: str) -> IO:
    return open(path, exclusive(mode), newline="" if "b" not in mode else None)


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file for ``path``; it is renamed to ``path`` when the block ends, removed when it fails."""
    with StagedFiles() as staged:
        with staged.open(path, mode) as fh:
            yield fh
        staged.commit()


def place_new(tmp: Path, final: Path) -> None:
    """Move ``tmp`` to ``final`` only if nothing is there: a hard link fails when ``final`` exists, atomically (where
    the file system has no hard links, the check and the rename are two steps)."""
    taken = OutputError(f"{final} appeared while this ran; choose another name, or pass --overwrite to replace it")
    try:
        os.link(tmp, final)
    except FileExistsError:
        if same_file(tmp, final):  # a network file system retried a link that had succeeded
            remove_quietly(tmp)
            return
        raise taken from None
    except OSError:
        if os.path.lexists(final):
            raise taken from None
        os.replace(tmp, final)
        return
    remove_quietly(tmp)  # final is ours and complete either way: a left temporary file goes with the staged ones


class StagedFiles:
    """Complete temporary files that become final together.

    ``commit`` renames them in the order they were staged; leaving the ``with`` block removes every one that was not
    renamed (after an error, an interrupt or a full disk), so no temporary file outlives the run.
    """

    def __init__(self) -> None:
        self.pending: list[tuple[Path, Path]] = []  # (temporary, final)

    def add(self, final: str | Path) -> Path:
        """Stage ``final``: the temporary path to write it to (free: a regular file a dead process left there under
        this pid is removed; anything else there is an :class:`OutputError`)."""
        tmp = partial_path(final)
        found = kind(tmp)
        if found is not None:
            raise not_regular_error(tmp, found, "a temporary file of muse-fast")
        remove_quietly(tmp)
        self.pending.append((tmp, Path(final)))
        return tmp

    @contextlib.contextmanager
    def open(self, final: str | Path, mode: str = "wb") -> Iterator[IO]:
        with _open(self.add(final), mode) as fh:
            yield fh

    @staticmethod
    def open_added(tmp: Path, mode: str = "wb") -> IO:
        """Create and open a temporary path that :meth:`add` returned (staged in order, written later or elsewhere)."""
        return _open(tmp, mode)

    def commit(self, before_each: Callable[[Path], None] | None = None, replace: bool = True) -> list[Path]:
        """Rename every staged file to its final name; ``before_each(final)`` runs before each rename.

        A final name held by anything but a regular file (a link, a device node, a FIFO) is an :class:`OutputError`,
        never replaced. Without ``replace``, a final name that exists by now (a file made while this ran, by the user or
        another run) is an :class:`OutputError` too, and the files this commit already put in place are taken back."""
        done = []
        try:
            while self.pending:
                tmp, final = self.pending[0]
                if before_each is not None:
                    before_each(final)
                check_regular(final)
                if replace:
                    os.replace(tmp, final)
                else:
                    place_new(tmp, final)  # never raises once final is ours (the temporary name goes quietly)
                done.append(self.pending.pop(0)[1])
        except BaseException:
            if not replace:
                for final in done:  # new files of ours: nothing of anyone else's was there
                    remove_quietly(final)
            raise
        return done

    def discard(self) -> None:
        for tmp, _ in self.pending:
            remove_quietly(tmp)
        self.pending.clear()

    def __enter__(self) -> StagedFiles:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.discard()
