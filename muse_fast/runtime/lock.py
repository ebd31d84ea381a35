"""One run per slide and output folder: an advisory ``flock`` on ``OUT/.<stem>.lock``, which holds the owner's pid.

A second run on the same slide and folder does not wait: it fails at once with one line naming the holder's pid.
The kernel drops the lock however the holder ends (even SIGKILL); a clean release also removes the file, and a file
left by a killed run is simply locked again (``stale`` then tells the new holder to clean up after it). Only the
holder touches the slide's shards and temporary files.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..errors import OutputError


def lock_path(out_dir: Path, stem: str) -> Path:
    return Path(out_dir) / f".{stem}.lock"


def is_locked(out_dir: Path, stem: str) -> bool:
    """Whether a run holds the slide's lock now: a probe that takes nothing and changes nothing."""
    try:
        fd = os.open(lock_path(out_dir, stem), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # also drops the shared lock, if we got it
    return False


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (own.st_dev, own.st_ino) == (st.st_dev, st.st_ino)


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return f"pid {text}" if text.isdigit() else "pid unknown"


class SlideLock:
    """``with SlideLock(out_dir, stem):`` holds the slide's lock; raises :class:`OutputError` when another run does."""

    def __init__(self, out_dir: Path, stem: str) -> None:
        self.path = lock_path(out_dir, stem)
        self.stem = stem
        self.fd: int | None = None
        self.stale = False  # the file was there before us: a run ended without releasing it (killed)

    def acquire(self) -> None:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                self.stale = False
            except FileExistsError:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                self.stale = True
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise OutputError(
                    f"{self.stem} in {self.path.parent} is being processed by another muse-fast run ({holder}, "
                    f"lock {self.path.name}); wait for it to finish, or pass another --out"
                ) from None
            except BaseException:
                os.close(fd)
                raise
            if _same_file(fd, self.path):
                break
            os.close(fd)  # the previous holder removed the file between our open and flock: lock the new one
        self.fd = fd
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass  # the pid is only for the message of a second run; a full disk must not stop this one

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)  # while still locked, so nobody can lock this file after us
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> SlideLock:
        self.acquire()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.release()
