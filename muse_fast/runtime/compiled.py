"""The compiled torch engine: the network ahead-of-time compiled by inductor (AOTInductor), built once and cached.

The package (``<cache>/compiled/<model>-<key>.pt2``) holds the network traced for one batch shape with frozen
weights, uint8 ``[B, H, W, 3]`` tiles in, the centre map out in fp32 and the feature map in the network's precision,
under bf16 autocast with the centre logits in fp32 (as :class:`~.engines.TorchEngine`) or in fp32. Its key is
everything that makes the generated code valid: the weights, tile and batch size, precision, OpenMP threads, the CPU
(model and flags) and the versions of torch and muse-fast; any change builds a new one. A process that finds the
package loads its shared library and compiles nothing, with the frozen weights on 64-byte boundaries
(:mod:`.aligned_package`). Building needs a C++ compiler; without one the engine is unavailable (see
:func:`compiler_missing_reason`) and :func:`~.engines.create_engine` runs the eager engine instead, saying so.

Batches are padded to the compiled batch size (the last batch of a slide is short), so one package serves a run.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import BackendUnavailable, one_line
from ..model.registry import DenseOutputs, MuseNet
from .precision import cpu_flags, cpu_flags_digest, cpu_model_name, resolve_precision

log = logging.getLogger(__name__)

COMPILED_FORMAT_VERSION = 3  # bump when the traced wrapper or the inductor settings change; 3: bf16 feature map
PRECISIONS = ("auto", "bf16", "fp32")
INDUCTOR_CONFIG = {"freezing": True}  # weights become constants: conv weights pre-packed, BN and bias folded


class TileNet(nn.Module):
    """uint8 NHWC tiles -> (fp32 centre map, feature map): what the engine feeds, as one graph to compile.

    Under bf16 the feature map stays bf16 (the last convolution's output, exact): half the bytes of fp32 for the
    network to write (a batch of 16: 25.7 MB against 51.4 MB, about 6% of the network's time) and for the point gather,
    which reads bf16 itself and sums in fp32.
    """

    def __init__(self, model: MuseNet, bf16: bool) -> None:
        super().__init__()
        self.model, self.bf16 = model, bf16

    def forward(self, tiles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = tiles.permute(0, 3, 1, 2).float()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            out = self.model(x, fp32_logits=self.bf16)
        return out.centre.float(), out.fmap


def compiler_missing_reason() -> str | None:
    """Why inductor cannot build C++ here (no compiler found), or None."""
    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        get_cpp_compiler()
    except Exception as exc:  # noqa: BLE001 - inductor raises its own error types for a missing or broken compiler
        return f"no C++ compiler found ({one_line(exc)}); install g++ (e.g. apt-get install g++) or set CXX"
    return None


def package_key(weights_sha256: str, tile_size: int, batch_size: int, precision: str) -> dict:
    """What the compiled code depends on (see the module's doc)."""
    from .. import __version__

    return {
        "weights": weights_sha256,
        "tile": tile_size,
        "batch": batch_size,
        "precision": precision,
        "threads": torch.get_num_threads(),
        "cpu": cpu_model_name(),
        "cpu_flags_sha256": cpu_flags_digest(cpu_flags()),
        "torch": torch.__version__,
        "muse_fast": __version__,
        "format": COMPILED_FORMAT_VERSION,
    }


def package_path(model_name: str, key: dict) -> Path:
    from muse_fast.export.cache import cache_dir, digest

    return cache_dir() / "compiled" / f"{model_name}-{digest(key)[:24]}.pt2"


def build_package(net: TileNet, example: torch.Tensor, path: Path) -> None:
    """Trace ``net`` for ``example``'s shape, compile it with inductor and write the package to ``path`` atomically."""
    reason = compiler_missing_reason()
    if reason:
        raise BackendUnavailable(reason)
    log.info("compiling the network with inductor (once per machine, weights and version): %s", path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.pt2")  # inductor wants the .pt2 suffix
    try:
        with torch.no_grad():
            exported = torch.export.export(net, (example,))
            torch._inductor.aoti_compile_and_package(exported, package_path=str(tmp), inductor_configs=INDUCTOR_CONFIG)
        os.replace(tmp, path)
    except BackendUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - a compiler or tracing failure: the caller runs eager instead
        raise BackendUnavailable(f"compiling the network failed ({one_line(exc)})") from None
    finally:
        tmp.unlink(missing_ok=True)


def load_package(path: Path, aligned: bool = True):
    """The compiled runner in ``path``; a package that does not load is removed (rebuilt next time).

    ``aligned``: its frozen weights on 64-byte boundaries (:mod:`.aligned_package`, 1.5x faster on AMX where the
    load left them misaligned); else, or where that loader fails, inductor's own loader (the reference path).
    """
    if aligned:
        from .aligned_package import AlignedRunner

        try:
            return AlignedRunner(path)
        except Exception as exc:  # noqa: BLE001 - torch's runner API moved, or a damaged package (checked below)
            log.warning(
                "compiled network loaded without aligning its weights (%s); it may run up to 1.5x slower",
                one_line(exc),
            )
    try:
        return torch._inductor.aoti_load_package(str(path))
    except Exception as exc:  # noqa: BLE001 - a damaged or incompatible package
        path.unlink(missing_ok=True)
        raise BackendUnavailable(
            f"cannot load the compiled network {path} ({type(exc).__name__}); it was removed, run again to rebuild it"
        ) from None


class CompiledEngine:
    """The network compiled by inductor (module doc); CPU only, bf16 (``auto`` on CPUs with bf16 units) or fp32."""

    name = "compiled"

    def __init__(self, inputs) -> None:
        from muse_fast.export.cache import cached_file

        from .precision import check_precision

        if torch.device(inputs.device).type != "cpu":
            raise BackendUnavailable("engine 'compiled' runs on the CPU; on CUDA use --engine trt or torch")
        check_precision(inputs.precision, PRECISIONS, "compiled")
        self.precision = resolve_precision(inputs.precision, "cpu").precision
        self.device = torch.device("cpu")
        self.batch_size, self.tile_size = inputs.batch_size, inputs.meta.tile_size
        model = inputs.model.to(self.device).eval()
        self.eager = TileNet(model, self.precision == "bf16").eval()
        self.classifier = model.classifier.eval()
        key = package_key(inputs.weights_sha256, self.tile_size, self.batch_size, self.precision)
        path = package_path(inputs.meta.model, key)
        example = torch.zeros((self.batch_size, self.tile_size, self.tile_size, 3), dtype=torch.uint8)
        self.compiled_now = False  # whether this process compiled (a second process loads the package)

        def build(target: Path) -> None:
            build_package(self.eager, example, target)
            self.compiled_now = True

        # one build at a time; a process that waited finds the package; one that fails its checksum is rebuilt
        self.path = path = cached_file(path, build, "compiled network")
        self.runner = load_package(path)

    @torch.inference_mode()
    def run(self, tiles: np.ndarray) -> DenseOutputs:
        x = torch.from_numpy(np.ascontiguousarray(tiles))
        n = len(x)
        if x.shape[1:] != (self.tile_size, self.tile_size, 3) or x.dtype != torch.uint8:
            return DenseOutputs(*self.eager(x))  # another shape than the compiled one (never in a slide run)
        parts = []
        for start in range(0, n, self.batch_size):
            chunk = x[start : start + self.batch_size]
            short = self.batch_size - len(chunk)
            if short:  # pad to the compiled shape with white tiles; their outputs are dropped
                chunk = torch.cat([chunk, chunk.new_full((short, *chunk.shape[1:]), 255)])
            centre, fmap = self.runner(chunk)
            parts.append((centre[: len(chunk) - short], fmap[: len(chunk) - short]))
        if len(parts) == 1:
            return DenseOutputs(*parts[0])
        return DenseOutputs(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))

    @torch.inference_mode()
    def classify(self, feats: torch.Tensor) -> torch.Tensor:
        return self.classifier(feats.float())
