"""Typed configuration of an inference run (built by the CLI or by Python callers)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .post.decode import DecodeConfig


@dataclass(frozen=True)
class InferConfig:
    out_dir: Path
    engine: str = "torch"
    device: str = "cpu"
    weights: Path | None = None  # None = the shipped default weights
    mpp: float | None = None  # override of the slide's level-0 microns per pixel
    reader: str = "auto"
    batch_size: int = 16
    overlap: int = 32  # model pixels shared by neighbouring tiles (each side keeps overlap/2 of context)
    workers: int = 2  # threads reading tiles ahead of the engine
    skip_background: bool = True  # do not run the network on tiles that are blank glass
    tissue_mask: bool = True  # slides (not plain images): only tile where tissue is detected
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    overwrite: bool = False  # recompute slides whose outputs exist
    quiet: bool = False
