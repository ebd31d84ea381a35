"""Inference engines behind one interface, chosen in one registry.

An engine turns a batch of RGB tiles (``uint8 [B, H, W, 3]``) into the dense outputs (``centre``, ``fmap``) and
classifies point features. Only the PyTorch engine exists so far; ONNX Runtime and TensorRT join this registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from ..errors import BackendUnavailable, ConfigError
from ..model.registry import DenseOutputs, MuseNet


class Engine(Protocol):
    name: str
    device: torch.device

    def run(self, tiles: np.ndarray) -> DenseOutputs: ...

    def classify(self, feats: torch.Tensor) -> torch.Tensor: ...


class TorchEngine:
    """Eager PyTorch on CPU or CUDA; fp16 autocast on CUDA."""

    name = "torch"

    def __init__(self, model: MuseNet, device: str = "cpu") -> None:
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable("--device cuda requested but CUDA is not available here; use --device cpu")
        self.model = model.to(self.device).eval()

    @torch.inference_mode()
    def run(self, tiles: np.ndarray) -> DenseOutputs:
        x = torch.from_numpy(np.ascontiguousarray(tiles)).to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).float()
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.device.type == "cuda"):
            out = self.model(x)
        return DenseOutputs(out.centre.float(), out.fmap)

    @torch.inference_mode()
    def classify(self, feats: torch.Tensor) -> torch.Tensor:
        return self.model.classifier(feats.float())


@dataclass(frozen=True)
class EngineEntry:
    name: str
    unavailable_reason: Callable[[], str | None]
    build: Callable[[MuseNet, str], Engine]


ENGINES: dict[str, EngineEntry] = {
    "torch": EngineEntry("torch", lambda: None, TorchEngine),
}


def create_engine(name: str, model: MuseNet, device: str = "cpu") -> Engine:
    """Build engine ``name``; an unknown or unavailable engine raises one line with the choices and the reason."""
    if name not in ENGINES:
        raise ConfigError(f"unknown engine '{name}'; choose one of: {', '.join(ENGINES)}")
    entry = ENGINES[name]
    reason = entry.unavailable_reason()
    if reason:
        raise BackendUnavailable(f"engine '{name}' is unavailable: {reason}")
    return entry.build(model, device)
