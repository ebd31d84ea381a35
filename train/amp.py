"""Mixed-precision autocast for training: bf16 on CUDA or on a CPU with AMX/AVX512-BF16 units, fp16 on CUDA."""

from __future__ import annotations

import contextlib

import torch

from muse_fast.errors import ConfigError
from muse_fast.runtime.precision import cpu_bf16_units

AMP_CHOICES = ("none", "bf16", "fp16")


def check_amp(amp: str, device: str) -> None:
    """Refuse an unknown ``--amp`` value, or fp16 on the CPU (which has no fast fp16 path), in one line."""
    if amp not in AMP_CHOICES:
        raise ConfigError(f"unknown --amp '{amp}'; choose none, bf16 or fp16")
    if amp == "fp16" and device == "cpu":
        raise ConfigError("--amp fp16 runs on CUDA only; on the CPU use --amp bf16 (AMX/AVX512-BF16) or none")


def resolve_amp(amp: str, device: str = "cpu") -> str:
    """``auto`` -> ``bf16`` on CUDA or on a CPU with bf16 units, else ``none``; others are checked and kept."""
    if amp == "auto":
        return "bf16" if device == "cuda" or cpu_bf16_units() else "none"
    check_amp(amp, device)
    return amp


def autocast(amp: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context for ``amp`` on ``device`` (a no-op context for ``none``)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
