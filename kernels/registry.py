"""One registry per kernel: implementations as frozen entries, chosen in one place.

``auto`` picks Triton for CUDA tensors; for CPU tensors the native library (``csrc/``, built by CMake) where it is
built, else numba; and it falls back to the plain-PyTorch reference when the preferred one is unavailable (a warning
with the reason and the fix is logged once). An explicit request that cannot run raises one line with the reason and
the choices. Triton also runs on CPU tensors under ``TRITON_INTERPRET=1`` (tests). On the CPU the native kernels
give the same results as numba's and start in milliseconds where numba's import and cached kernels take about 0.55 s
of a fresh process; kernel by kernel neither wins clearly, and a slide end to end ran faster native
(docs/results.md, "Native post-processing library").
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from muse_fast.errors import BackendUnavailable, ConfigError

log = logging.getLogger(__name__)
_warned: set[str] = set()


def triton_interpret_default() -> str:
    """``TRITON_INTERPRET`` for test and benchmark runs: "1" (interpreter) without a CUDA GPU, else "0" (compiled)."""
    return "0" if torch.cuda.is_available() else "1"


def _missing(module: str) -> str | None:
    return None if importlib.util.find_spec(module) else f"python package '{module}' is not installed"


@dataclass(frozen=True)
class KernelImpl:
    name: str
    module: str  # "muse_fast.kernels.peaks.cpu", ...; imported on first use
    requires: str | None  # third-party package the implementation needs
    device: str  # "cpu", "cuda" or "any"

    def unavailable_reason(self, tensor: torch.Tensor) -> str | None:
        if self.requires and (reason := _missing(self.requires)):
            return reason
        if self.name == "triton" and tensor.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            return "Triton needs a CUDA tensor (or TRITON_INTERPRET=1 for the CPU interpreter)"
        if self.device == "cpu" and tensor.device.type != "cpu":
            return f"{self.name} runs on CPU tensors only"
        if self.name == "native":  # the CMake-built library for the tensor's device (kernels/native.py)
            from .native import unavailable_reason

            return unavailable_reason(tensor.device.type)
        return None

    def function(self, name: str) -> Callable:
        return getattr(importlib.import_module(self.module), name)


def implementations(package: str) -> dict[str, KernelImpl]:
    return {
        "reference": KernelImpl("reference", f"{package}.reference", None, "any"),
        "numba": KernelImpl("numba", f"{package}.cpu", "numba", "cpu"),
        "triton": KernelImpl("triton", f"{package}.triton", "triton", "any"),
        "native": KernelImpl("native", f"{package}.native", None, "any"),  # csrc/ via CMake; auto's first on the CPU
    }


def select(impls: dict[str, KernelImpl], impl: str, tensor: torch.Tensor) -> KernelImpl:
    """The implementation to run for ``tensor``: ``impl`` if given, else the preferred available one."""
    if impl != "auto":
        if impl not in impls:
            raise ConfigError(f"unknown kernel implementation '{impl}'; choose one of: auto, {', '.join(impls)}")
        reason = impls[impl].unavailable_reason(tensor)
        if reason:
            raise BackendUnavailable(f"kernel implementation '{impl}' cannot run here: {reason}")
        return impls[impl]
    if tensor.device.type != "cuda":
        stale = impls["native"].unavailable_reason(tensor)
        if stale is None:
            return impls["native"]
        _warn_if_built_but_unusable(stale)
    preferred = impls["triton"] if tensor.device.type == "cuda" else impls["numba"]
    reason = preferred.unavailable_reason(tensor)
    if reason is None:
        return preferred
    key = f"{preferred.module}:{reason}"
    if key not in _warned:
        _warned.add(key)
        fix = f"; install it with: pip install {preferred.requires}" if "not installed" in reason else ""
        log.warning("%s kernels unavailable (%s): using the slower PyTorch reference%s", preferred.name, reason, fix)
    return impls["reference"]


def _warn_if_built_but_unusable(reason: str) -> None:
    """Once per reason: a native library that is there but cannot be used (built for another version of this package,
    usually after an upgrade) makes every slide slower without it, so say so and how to rebuild it. A library never
    built is the normal state of a pip install and is not warned about."""
    from .native import library_path

    if reason in _warned:  # every CPU kernel call asks: answered from memory after the first
        return
    _warned.add(reason)
    if library_path("cpu") is None:
        return
    log.warning("native CPU library not used (%s); the numba kernels and Python text formatting run instead", reason)
