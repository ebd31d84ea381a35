"""The artifact cache for exported ONNX models and TensorRT engines: keys, location, atomic writes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

# Bump when the exported graph changes, so old cache entries are not reused.
# 2: the uint8 input is cast before the NHWC -> NCHW transpose (TensorRT reads uint8 only through a Cast).
EXPORT_FORMAT_VERSION = 2


def cache_dir() -> Path:
    """``$MUSE_FAST_CACHE``, else ``$XDG_CACHE_HOME/muse-fast``, else ``~/.cache/muse-fast``."""
    if env := os.environ.get("MUSE_FAST_CACHE"):
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "muse-fast"


def digest(parts: dict) -> str:
    """Stable sha256 of a JSON-able dict (sorted keys)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def onnx_cache_key(weights_sha256: str, torch_version: str, tile_size: int) -> str:
    return digest(
        {"weights": weights_sha256, "torch": torch_version, "tile": tile_size, "format": EXPORT_FORMAT_VERSION}
    )[:24]


def engine_cache_key(
    onnx_sha256: str,
    profile: tuple[int, int, int],
    precision: str,
    builder_flags: list[str],
    trt_version: str,
    compute_capability: str,
) -> str:
    """Everything that makes a TensorRT engine valid: change any of these and the engine is rebuilt."""
    return digest(
        {
            "onnx": onnx_sha256,
            "profile": list(profile),
            "precision": precision,
            "flags": sorted(builder_flags),
            "trt": trt_version,
            "sm": compute_capability,
            "format": EXPORT_FORMAT_VERSION,
        }
    )[:24]


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)
