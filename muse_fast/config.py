"""Typed configuration of an inference run (built by the CLI or by Python callers), validated when it is built."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BackendUnavailable, ConfigError, WeightsError
from .post.decode import DecodeConfig
from .runtime.precision import check_precision

PLAUSIBLE_MPP = (0.1, 4.0)  # microns per pixel of real slides and images; outside it a run warns with its tile count
MIN_MPP = 0.05  # half of what the finest light microscopy samples (0.2 um resolved, 0.1 um/px): a typo or damage;
# a finer value also makes each tile's read huge (0.0011 asked 29 GiB for one tile of a 491 px image)


def valid_mpp(value: object) -> bool:
    """A positive, finite number of microns per pixel."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def check_mpp(value: float | None, source: str = "--mpp") -> float | None:
    if value is not None and not valid_mpp(value):
        raise ConfigError(
            f"{source} must be a positive, finite number of microns per pixel (e.g. 0.25 at 40x, 0.5 at 20x), "
            f"got {value}"
        )
    if value is not None and value < MIN_MPP:
        raise ConfigError(implausible_mpp(source, value))
    return value


def implausible_mpp(source: str, value: float) -> str:
    return (
        f"{source} {value:g} is an implausible resolution (below {MIN_MPP:g} microns per pixel, finer than any "
        f"light microscope samples); give the microns per pixel (e.g. 0.25 at 40x, 0.5 at 20x)"
    )


def check_weights_mpp(value: object, name: str) -> None:
    """Weights must record the positive, finite resolution they were trained at."""
    if not valid_mpp(value):
        raise WeightsError(
            f"weights {name} record mpp {value!r}; it must be the positive microns per pixel the network was trained "
            f"at (0.5 for BRCA-M2C): pass weights written by train.finetune"
        )


@dataclass(frozen=True)
class InferConfig:
    out_dir: Path
    engine: str = "torch"
    precision: str = "auto"  # fp32, bf16, fp16, int8 or auto (runtime/precision.py); the engine built from it rules
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
    skip_unreadable: bool = False  # finish slides with damaged tiles, listing the skipped regions (default: fail)
    embeddings: bool = False  # also write <stem>.h5ad: every nucleus's point feature (needs h5py)
    tta: bool = False  # flip test-time augmentation (runtime/tta.py): 3 network passes per tile

    def __post_init__(self) -> None:
        threshold = self.decode.threshold
        if not (isinstance(threshold, (int, float)) and 0 < threshold < 1):
            raise ConfigError(
                f"--threshold must be a nucleus score between 0 and 1 (exclusive), got {threshold}; the default is "
                f"{DecodeConfig.threshold}"
            )
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}; the default is 16")
        if self.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {self.workers}; the default is 2")
        from .runtime.bounds import cap_workers

        object.__setattr__(self, "workers", cap_workers(self.workers))
        check_mpp(self.mpp)
        check_precision(self.precision)
        if self.embeddings:
            from .output.h5ad import embeddings_unavailable_reason

            reason = embeddings_unavailable_reason()
            if reason:
                raise BackendUnavailable(reason)
