"""One run per slide and output folder: an advisory ``flock`` on ``OUT/.<stem>.lock``, which holds the owner's pid.

A second run on the same slide and folder does not wait: it fails at once with one line naming the holder's pid.
The kernel drops the lock however the holder ends (even SIGKILL); a clean release also removes the file, and a file
left by a killed run is simply locked again (``stale`` then tells the new holder to clean up after it). Only the
holder touches the slide's shards and temporary files.

The lock file is opened with ``O_NOFOLLOW`` (and ``O_NONBLOCK``, so a FIFO cannot block): a link, folder, FIFO or
device node at its name (or a file with other hard links) is refused in one line and left as it is, so a link
planted in a shared folder cannot make the run truncate the file it points to.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path

from ..errors import OutputError
from ..output.regular import check_regular, kind, not_regular_error

OPEN_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
LOCK_ROLE = "the lock file of muse-fast"
BUSY = "is being processed by another muse-fast run"  # in the error when the lock is held


def lock_path(out_dir: Path, stem: str) -> Path:
    return Path(out_dir) / f".{stem}.lock"


def is_locked(out_dir: Path, stem: str) -> bool:
    """Whether a run holds the slide's lock now: a probe that takes nothing and changes nothing."""
    try:
        fd = os.open(lock_path(out_dir, stem), os.O_RDONLY | OPEN_FLAGS)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
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
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (own.st_dev, own.st_ino) == (st.st_dev, st.st_ino)


def _lock_text(fd: int) -> bool:
    """Whether the file holds what a lock of muse-fast holds: nothing yet, or the holder's pid and a newline."""
    try:
        data = os.pread(fd, 64, 0)
    except OSError:
        return False
    data = data.strip(b"\0")  # a file system may leave zeros where a write was lost (a power cut)
    return data == b"" or (len(data) <= 21 and data.rstrip(b"\n").isdigit() and data.count(b"\n") <= 1)


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

    def _open(self) -> int:
        """The lock file's descriptor, created if need be; never through a link, never anything but a regular file."""
        check_regular(self.path, LOCK_ROLE)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | OPEN_FLAGS, 0o644)
            self.stale = False
        except FileExistsError:
            try:
                fd = os.open(self.path, os.O_RDWR | OPEN_FLAGS)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):  # swapped for a link, folder or FIFO
                    raise not_regular_error(self.path, kind(self.path) or "a special file", LOCK_ROLE) from None
                raise
            self.stale = True
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise not_regular_error(self.path, kind(self.path) or "a special file", LOCK_ROLE)
        if st.st_nlink > 1:  # a hard link to another file: locking would truncate that file
            os.close(fd)
            raise OutputError(
                f"{self.path.name} in {self.path.parent} has {st.st_nlink} hard links, and it is the name of "
                f"{LOCK_ROLE}, which is rewritten in place; remove it (the other names keep the file) or pass another "
                f"--out"
            )
        if self.stale and not _lock_text(fd):  # a file someone else put at the lock's name: never truncated
            os.close(fd)
            raise OutputError(
                f"{self.path.name} in {self.path.parent} is a file muse-fast did not write, and it is the name of "
                f"{LOCK_ROLE}, which is rewritten in place; move it, or pass another --out"
            )
        return fd

    def acquire(self) -> None:
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise OutputError(
                    f"{self.stem} in {self.path.parent} {BUSY} ({holder}, "
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
            if _same_file(self.fd, self.path):  # only our file: never what someone put at its name since
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
