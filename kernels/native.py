"""The optional native post-processing libraries (``csrc/``, built by CMake), loaded with ctypes.

``libmuse_native_cpu.so`` serves CPU tensors and ``libmuse_native_cuda.so`` CUDA tensors; the TensorRT plugin
(``libmuse_trt_plugin.so``) is found the same way. They are looked up in ``$MUSE_NATIVE_BUILD`` first, then in the
repository's ``build/``. Nothing is loaded at import; a missing or stale library is a one-line reason with the
command that builds it. Tensors are passed as raw pointers (``data_ptr``): callers pass float32 / int32 tensors of
the layouts ``csrc/muse_native.h`` documents.
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

import torch

from muse_fast.errors import BackendUnavailable

ABI_VERSION = 4  # csrc/muse_native.h: MUSE_NATIVE_ABI_VERSION
LIBRARIES = {"cpu": "libmuse_native_cpu.so", "cuda": "libmuse_native_cuda.so", "trt": "libmuse_trt_plugin.so"}
BUILD_COMMAND = "cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build -j2"
NEEDS = {"cpu": "a C++ compiler", "cuda": "nvcc", "trt": "nvcc and -DTensorRT_ROOT=/path/to/TensorRT"}

_P, _I32, _I64, _F = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64, ctypes.c_float
_PEAKS = [_P, _I64, _I64, _I64, _F, _I32, _I32, _I32, _P, _P, _P, _P]
_GATHER = [_P, _P, _I64, _I64, _I64, _I64, _P, _I64, _P, _F, _F, _P]
_BACKWARD = [_P, _I64, _I64, _I64, _I64, _P, _I64, _P, _F, _F, _P]
_DECODE = [_P, _P, _P, _I64, _I64, _I64, _I64, _F, _I32, _I32, _I32, _F, _F, _F, _P, _P, _P, _P, _P]
_FORMAT = [_P, _P, _P, _P, _I64, _P, _I64, _P, _I64, _P]
_PASTE = [_P, _I64, _I64, _P, _P, _I64, _P, _P, _P, _I64]
SIGNATURES = {
    "cpu": {
        "muse_peaks_cpu": _PEAKS,
        "muse_gather_cpu": _GATHER,
        "muse_gather_bf16_cpu": _GATHER,
        "muse_gather_backward_cpu": _BACKWARD,
        "muse_decode_cpu": _DECODE,
        "muse_format_geojson": _FORMAT,
        "muse_format_csv": _FORMAT,
        "muse_paste_stamps": _PASTE,
    },
    "cuda": {
        "muse_peaks_cuda": _PEAKS + [_P, _P],
        "muse_gather_cuda": _GATHER + [_P],
        "muse_gather_backward_cuda": _BACKWARD + [_P],
        "muse_decode_cuda": _DECODE + [_P, _P],
    },
}
WORKSPACE = {"muse_peaks_cuda_workspace": [_I64, _I64, _I64], "muse_decode_cuda_workspace": [_I64, _I64, _I64, _I32]}


def search_dirs() -> list[Path]:
    """Where the libraries are looked up: ``$MUSE_NATIVE_BUILD``, then the repository's ``build/``."""
    dirs = [Path(os.environ["MUSE_NATIVE_BUILD"])] if os.environ.get("MUSE_NATIVE_BUILD") else []
    return dirs + [Path(__file__).resolve().parents[1] / "build"]


def library_path(kind: str) -> Path | None:
    for folder in search_dirs():
        if (folder / LIBRARIES[kind]).is_file():
            return folder / LIBRARIES[kind]
    return None


def not_built_reason(kind: str) -> str:
    """One line: where the library was looked for, what building it needs, and the command."""
    where = " or ".join(str(d) for d in search_dirs())
    return f"{LIBRARIES[kind]} is not built in {where} (needs {NEEDS[kind]}); build it with: {BUILD_COMMAND}"


@functools.cache
def _load(kind: str) -> ctypes.CDLL | str:
    """The library with its signatures set, or the one-line reason it cannot be used (looked up once)."""
    path = library_path(kind)
    if path is None:
        return not_built_reason(kind)
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        return f"{path} cannot be loaded ({str(exc).splitlines()[0]}); rebuild it with: {BUILD_COMMAND}"
    lib.muse_native_error.restype = ctypes.c_char_p
    lib.muse_native_error.argtypes = [ctypes.c_int]
    if (version := lib.muse_native_abi_version()) != ABI_VERSION:
        return f"{path} has ABI {version}, this package needs {ABI_VERSION}: rebuild it with: {BUILD_COMMAND}"
    for name, argtypes in SIGNATURES[kind].items():
        getattr(lib, name).argtypes, getattr(lib, name).restype = argtypes, ctypes.c_int
    if kind == "cuda":
        for name, argtypes in WORKSPACE.items():
            getattr(lib, name).argtypes, getattr(lib, name).restype = argtypes, ctypes.c_size_t
    return lib


def unavailable_reason(device_type: str) -> str | None:
    """Why the native kernels cannot run on tensors of ``device_type`` ("cpu" or "cuda"), or None."""
    if device_type not in ("cpu", "cuda"):
        return f"the native kernels run on CPU and CUDA tensors, not {device_type}"
    loaded = _load(device_type)
    return loaded if isinstance(loaded, str) else None


def library(device_type: str) -> ctypes.CDLL:
    loaded = _load(device_type)
    if isinstance(loaded, str):
        raise BackendUnavailable(loaded)
    return loaded


def call(lib: ctypes.CDLL, name: str, *args) -> None:
    """Call ``name``; a non-zero return becomes one line naming the function and the library's reason."""
    rc = getattr(lib, name)(*args)
    if rc != 0:
        raise RuntimeError(f"native {name} failed: {lib.muse_native_error(rc).decode()} (code {rc})")


def ptr(tensor: torch.Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


def stream_of(tensor: torch.Tensor) -> int | None:
    """The current CUDA stream of ``tensor``'s device (None on CPU)."""
    return torch.cuda.current_stream(tensor.device).cuda_stream if tensor.is_cuda else None


def workspace(lib: ctypes.CDLL, name: str, device: torch.device, *sizes) -> torch.Tensor:
    """A device scratch buffer of the size ``name`` (a ``*_workspace`` function) asks for."""
    return torch.empty(max(int(getattr(lib, name)(*sizes)), 1), dtype=torch.uint8, device=device)
