"""The artifact cache for exported ONNX models and TensorRT engines: keys, location, atomic writes."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from muse_fast.errors import ConfigError
from muse_fast.output.atomic import atomic_write
from muse_fast.output.regular import mode_kind

log = logging.getLogger(__name__)
MAX_READ_BYTES = 1 << 30  # more than any cached file of ours: a read never runs away on an endless source

# Bump when the exported graph changes, so old cache entries are not reused.
# 2: the uint8 input is cast before the NHWC -> NCHW transpose (TensorRT reads uint8 only through a Cast).
EXPORT_FORMAT_VERSION = 2


def cache_dir() -> Path:
    """``$MUSE_FAST_CACHE``, else ``$XDG_CACHE_HOME/muse-fast``, else ``~/.cache/muse-fast``.

    An empty or relative ``XDG_CACHE_HOME`` counts as unset, as the XDG Base Directory specification says (it would
    otherwise put the cache in the working folder).
    """
    if env := os.environ.get("MUSE_FAST_CACHE"):
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "muse-fast"


def ensure_folder(folder: Path) -> Path:
    """Make ``folder`` (under the cache); a path that cannot be a folder is a one-line ConfigError naming the fix."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"the cache folder {folder} cannot be used ({type(exc).__name__}: {exc.strerror or exc}); "
            "set MUSE_FAST_CACHE to a writable folder"
        ) from None
    return folder


def digest(parts: dict) -> str:
    """Stable sha256 of a JSON-able dict (sorted keys)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def onnx_cache_key(weights_sha256: str, torch_version: str, tile_size: int, precision: str = "fp32") -> str:
    parts = {"weights": weights_sha256, "torch": torch_version, "tile": tile_size, "format": EXPORT_FORMAT_VERSION}
    if precision != "fp32":  # fp32 keys are those of earlier versions
        parts["precision"] = precision
    return digest(parts)[:24]


def engine_cache_key(
    onnx_sha256: str,
    profile: tuple[int, int, int],
    precision: str,
    builder_flags: list[str],
    trt_version: str,
    compute_capability: str,
    gpu_name: str,
) -> str:
    """Everything that makes a TensorRT engine valid: change any of these and the engine is rebuilt.

    The GPU's name is part of it because the compute capability is not enough: an H100 and an H200 are both 9.0,
    and TensorRT's tactics are timed for one board (memory bandwidth, SM count).
    """
    return digest(
        {
            "onnx": onnx_sha256,
            "profile": list(profile),
            "precision": precision,
            "flags": sorted(builder_flags),
            "trt": trt_version,
            "sm": compute_capability,
            "gpu": gpu_name,
            "format": EXPORT_FORMAT_VERSION,
        }
    )[:24]


@contextmanager
def build_lock(path: Path, timeout_s: float = 1800.0) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``<path>.lock`` so that one process builds ``path`` while others wait.

    Callers check again for ``path`` once they hold the lock: whoever waited finds the finished artifact.
    """
    lock = path.with_name(f".{path.name}.lock")
    ensure_folder(lock.parent)
    with open(lock, "a+") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"waited {timeout_s:.0f} s for another build of {path.name} ({lock})") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_build(path: Path, build: Callable[[], bytes]) -> bytes:
    """The bytes at ``path``, built once (under :func:`build_lock`) and written atomically with their checksum when
    missing or when they fail it (:func:`cached_file`)."""
    cached_file(path, lambda target: write_atomic(target, build()), "artifact")
    data = read_regular(path)
    if data is None or _sha256(data) != _recorded_sum(path):  # replaced since it was checked: not ours to use
        raise ConfigError(f"{path} in the cache changed while it was read; run again")
    return data


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` in the cache (temporary file + rename); a symlink, FIFO or device node standing at
    ``path`` is removed first (the link itself, never its target): the cache folder is ours."""
    ensure_folder(path.parent)
    if os.path.lexists(path) and not stat.S_ISREG(os.lstat(path).st_mode):
        _remove_entry(path)
    try:
        with atomic_write(path, "wb") as fh:
            fh.write(data)
    except IsADirectoryError:
        raise ConfigError(f"{path} in the cache is a folder; remove it or set MUSE_FAST_CACHE elsewhere") from None


def read_regular(path: Path, limit: int = MAX_READ_BYTES) -> bytes | None:
    """The bytes of ``path`` if it is a regular file (not followed when a symlink), else None with one warning.

    Never blocks on a FIFO or reads a device (``O_NONBLOCK | O_NOFOLLOW``, then ``fstat``); None if it is missing.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:  # ELOOP: a symlink; EACCES, EISDIR, ...
        kind = "a symbolic link" if path.is_symlink() else (exc.strerror or type(exc).__name__).lower()
        log.warning("%s in the cache is %s, not a file of ours; ignoring it", path, kind)
        return None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        log.warning("%s in the cache is %s, not a file of ours; ignoring it", path, mode_kind(info.st_mode))
        return None
    with os.fdopen(fd, "rb") as fh:
        if info.st_size > limit:
            log.warning("%s in the cache is %d bytes, more than any of ours; ignoring it", path, info.st_size)
            return None
        return fh.read(limit)


def checksum_path(path: Path) -> Path:
    """Where the sha256 of the cached file ``path`` is kept: ``<path>.sha256`` beside it."""
    return path.with_name(f"{path.name}.sha256")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _recorded_sum(path: Path) -> str | None:
    text = read_regular(checksum_path(path), limit=256)
    return text.decode("ascii", "replace").strip() if text is not None else None


def verify(path: Path) -> str | None:
    """Why the cached file ``path`` cannot be used (not a regular file, no checksum, a mismatch), or None if it can."""
    data = read_regular(path)
    if data is None:
        return "missing or not a regular file"
    recorded = _recorded_sum(path)
    if recorded is None:
        return "it has no checksum"
    return None if _sha256(data) == recorded else "it fails its checksum"


def record_checksum(path: Path) -> None:
    """Write the sha256 of the (just built) cached file ``path`` beside it, atomically."""
    data = read_regular(path)
    if data is None:
        raise ConfigError(
            f"{path} in the cache is not a regular file after it was built; set MUSE_FAST_CACHE elsewhere"
        )
    write_atomic(checksum_path(path), (_sha256(data) + "\n").encode())


def cached_file(path: Path, build: Callable[[Path], None], what: str) -> Path:
    """``path``, (re)built by ``build(path)`` under :func:`build_lock` when it is missing or fails its checksum.

    ``build`` writes the file (atomically); its checksum is recorded after it. A cached file that fails the check
    (damaged, truncated, replaced by a FIFO or a symlink, or from a version without checksums) is rebuilt with one
    warning naming it.
    """
    if verify(path) is None:
        return path
    with build_lock(path):  # builders hold it while they write the file and its checksum: a consistent view
        why = verify(path)
        if why is None:  # built by the process we waited for
            return path
        if os.path.lexists(path):
            log.warning("cached %s %s: %s; rebuilding it", what, path, why)
            _remove_entry(path)
        checksum_path(path).unlink(missing_ok=True)
        build(path)
        record_checksum(path)
    return path


def _remove_entry(path: Path) -> None:
    """Remove a cache entry itself (a symlink, not its target); a folder in its place is a one-line error."""
    try:
        path.unlink()
    except IsADirectoryError:
        raise ConfigError(f"{path} in the cache is a folder; remove it or set MUSE_FAST_CACHE elsewhere") from None
    except FileNotFoundError:
        pass
