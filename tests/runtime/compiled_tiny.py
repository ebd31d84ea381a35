"""A tiny MUSE network for the compiled engine's tests (compiles in seconds), and a script that builds the compiled
engine in a fresh process and prints what the compiler did.

    python compiled_tiny.py OUT.npz   (MUSE_FAST_CACHE names the cache)
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch
from torch import nn

from muse_fast.model.backbone import BackboneOutput
from muse_fast.model.registry import MuseNet
from muse_fast.model.weights import WeightsMeta

TILE, BATCH, THREADS = 32, 4, 1
META = WeightsMeta("tiny", ("a", "b", "c"), 0.5, TILE)


class TinyBackbone(nn.Module):
    """Two convolutions to a stride-4 feature map (the shape contract of :class:`MuseBackbone`)."""

    out_dim = 8

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1))

    def forward(self, x: torch.Tensor) -> BackboneOutput:
        fmap = self.body(x)
        return BackboneOutput(fmap, fmap.mean((2, 3), keepdim=True))


def tiny_model() -> MuseNet:
    torch.manual_seed(0)
    model = MuseNet(TinyBackbone(), 3).eval()
    nn.init.normal_(model.centre_head.out.weight, std=0.1)  # zero at init: make the centre map depend on the input
    return model


def tiles(n: int = BATCH) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (n, TILE, TILE, 3), dtype=np.uint8)


def main(out: str) -> None:
    from torch._dynamo.utils import counters

    from muse_fast.runtime.engines import EngineInputs, create_engine

    torch.set_num_threads(THREADS)
    engine = create_engine("compiled", EngineInputs(tiny_model(), META, "tiny-seed-0", "cpu", BATCH, "bf16"))
    full, short = engine.run(tiles()), engine.run(tiles()[:3])
    np.savez(out, centre=full.centre.numpy(), fmap=full.fmap.float().numpy(), short=short.centre.numpy())
    inductor = {k: v for k, v in counters["inductor"].items() if v}
    print(json.dumps({"engine": engine.name, "compiled_now": engine.compiled_now, "inductor": inductor}))


if __name__ == "__main__":
    main(sys.argv[1])
