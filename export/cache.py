"""The artifact cache for exported ONNX models and TensorRT engines: keys, location, atomic writes."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from muse_fast.errors import ConfigError
from muse_fast.output.atomic import atomic_write

# Bump when the exported graph changes, so old cache entries are not reused.
# 2: the uint8 input is cast before the NHWC -> NCHW transpose (TensorRT reads uint8 only through a Cast).
EXPORT_FORMAT_VERSION = 2


def cache_dir() -> Path:
    """``$MUSE_FAST_CACHE``, else ``$XDG_CACHE_HOME/muse-fast``, else ``~/.cache/muse-fast``."""
    if env := os.environ.get("MUSE_FAST_CACHE"):
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
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
    """The bytes at ``path``, built once (under :func:`build_lock`) and written atomically when missing."""
    if path.exists():
        return path.read_bytes()
    with build_lock(path):
        if path.exists():  # built by the process we waited for
            return path.read_bytes()
        data = build()
        write_atomic(path, data)
        return data


def write_atomic(path: Path, data: bytes) -> None:
    ensure_folder(path.parent)
    try:
        with atomic_write(path, "wb") as fh:
            fh.write(data)
    except IsADirectoryError:
        raise ConfigError(f"{path} in the cache is a folder; remove it or set MUSE_FAST_CACHE elsewhere") from None
