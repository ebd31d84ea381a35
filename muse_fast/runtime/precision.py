"""Which numeric precision an engine runs at: the CPU's bf16 units, the GPU's half-precision tensor cores, or fp32.

``auto`` on the CPU is bf16 only where the CPU has bf16 matrix units (Intel AMX, or AVX512-BF16 on Intel Cooper
Lake and later and AMD Zen 4 and later), read from ``/proc/cpuinfo`` and, where that file is absent, from torch's
own probes; elsewhere bf16 is emulated and slower than fp32, so ``auto`` is fp32. On CUDA, ``auto`` is fp16 on
devices with tensor cores (compute capability 7.0 and later): three more mantissa bits than bf16, and the network's
activations stay far inside fp16's range (see ``export.onnx.PARITY_ATOL_FP16``). Peaks and the ownership merge
always run in fp32 (the engines hand over fp32 centre maps).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..errors import BackendUnavailable, ConfigError

PRECISIONS = ("fp32", "bf16", "fp16", "int8")  # int8: ONNX Runtime on the CPU (dynamic quantization)
CHOICES = ("auto", *PRECISIONS)
TORCH_CHOICES = ("auto", "fp32", "bf16", "fp16")
BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo names of the CPU's bf16 matrix / dot-product units
CPUINFO = Path("/proc/cpuinfo")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str
    reason: str  # one short clause: why this precision was picked


def check_precision(value: str, choices: tuple[str, ...] = CHOICES, engine: str | None = None) -> str:
    """``value`` if it is one of ``choices`` (those of ``engine``, if given), else a one-line :class:`ConfigError`."""
    if value not in choices:
        problem = f"engine '{engine}' does not offer precision '{value}'" if engine else f"unknown precision '{value}'"
        raise ConfigError(f"{problem}; choose one of: {', '.join(choices)}")
    return value


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU feature flags in ``cpuinfo`` text (default: this machine's ``/proc/cpuinfo``; empty if absent).

    x86 lists them on ``flags`` lines, ARM on ``Features`` lines; the first such line is read.
    """
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text(errors="replace")
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            return set(value.split())
    return set()


def cpu_flags_digest(flags: set[str]) -> str:
    """A short, stable digest of a set of CPU flags, for cache keys (16 hex digits of sha256)."""
    import hashlib

    return hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()[:16]


def cpu_model_name(cpuinfo: str | None = None) -> str:
    """The CPU's marketing name from ``cpuinfo`` (default: this machine's), else the platform's processor string."""
    import platform

    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("model name", "cpu model", "hardware"):
            return value.strip()
    return platform.processor() or platform.machine()


def _torch_bf16_units() -> list[str]:
    """torch's own probes (used where there is no ``/proc/cpuinfo``, e.g. macOS or a locked-down container)."""
    import torch

    probes = {"amx_bf16": "_is_amx_tile_supported", "avx512_bf16": "_is_avx512_bf16_supported"}
    found = []
    for flag, probe in probes.items():
        fn = getattr(torch.cpu, probe, None)
        try:
            if fn is not None and fn():
                found.append(flag)
        except RuntimeError:
            pass
    return found


def cpu_bf16_units(flags: set[str] | None = None) -> list[str]:
    """The bf16 units this CPU reports (``amx_bf16``, ``avx512_bf16``); ``flags`` default to :func:`cpu_flags`."""
    flags = cpu_flags() if flags is None else flags
    if not flags:
        return _torch_bf16_units()
    return [flag for flag in BF16_FLAGS if flag in flags]


def cpu_precision(requested: str, flags: set[str] | None = None) -> PrecisionChoice:
    """The torch engine's CPU precision for ``requested`` (auto, fp32, bf16); fp16 has no fast CPU path."""
    check_precision(requested, TORCH_CHOICES, "torch")
    units = cpu_bf16_units(flags)
    if requested == "fp16":
        raise ConfigError("precision fp16 runs on CUDA only; on the CPU use --precision bf16 or fp32 (or auto)")
    if requested == "auto":
        if units:
            return PrecisionChoice("bf16", f"the CPU has {' and '.join(units)}")
        return PrecisionChoice("fp32", "the CPU reports no AMX or AVX512-BF16 (bf16 would be emulated)")
    if requested == "bf16" and not units:
        log.warning("precision bf16: this CPU has no AMX or AVX512-BF16, so bf16 is emulated and slower than fp32")
        return PrecisionChoice("bf16", "requested (emulated on this CPU)")
    return PrecisionChoice(requested, "requested")


def cuda_precision(requested: str, capability: tuple[int, int], bf16_supported: bool) -> PrecisionChoice:
    """The torch engine's CUDA precision for ``requested`` on a device of compute ``capability``."""
    check_precision(requested, TORCH_CHOICES, "torch")
    if requested == "auto":
        if capability >= (7, 0):
            return PrecisionChoice("fp16", f"tensor cores (compute capability {capability[0]}.{capability[1]})")
        return PrecisionChoice("fp32", f"no tensor cores (compute capability {capability[0]}.{capability[1]})")
    if requested == "bf16" and not bf16_supported:
        raise BackendUnavailable(
            f"this GPU (compute capability {capability[0]}.{capability[1]}) has no bf16 support; use --precision fp16"
        )
    return PrecisionChoice(requested, "requested")


def resolve_precision(requested: str, device: str = "cpu") -> PrecisionChoice:
    """The precision for ``requested`` on ``device`` (``cpu``, ``cuda`` or ``cuda:N``) of this machine."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return cpu_precision(requested)
    return cuda_precision(requested, torch.cuda.get_device_capability(device), torch.cuda.is_bf16_supported())
