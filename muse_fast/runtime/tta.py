"""Flip test-time augmentation as an engine wrapper: the dense outputs of a batch and its flips, averaged.

The centre logits and the feature map of each flipped pass are flipped back and averaged with the plain pass. Sub-cell
offsets follow the head's convention (a nucleus at integer pixel ``x = 4c + r`` has cell ``c`` and offset ``r / 4``):
a horizontal flip of a width-``W`` tile (``W`` a multiple of 4) maps it to cell ``W/4 - 1 - c`` and offset
``0.75 - r / 4``, so the flipped offset ``d`` is restored as ``0.75 - d``. Costs one extra network pass per flip.
``muse-fast infer --tta`` and ``train.evaluate --tta`` use it; the engine's name gets ``+tta``, so results with and
without it are never mixed on resume.
"""

from __future__ import annotations

import numpy as np
import torch

from muse_fast.model.registry import DenseOutputs


class FlipTTAEngine:
    """Wraps an engine; ``flips`` is a subset of ``("h", "v")``. Other attributes (``precision``, ...) are the
    wrapped engine's."""

    def __init__(self, engine, flips: tuple[str, ...] = ("h", "v")) -> None:
        self.engine = engine
        self.flips = flips
        self.name = f"{engine.name}+tta"

    def __getattr__(self, name: str):  # only called for attributes this wrapper lacks
        if name == "engine":
            raise AttributeError(name)
        return getattr(self.engine, name)

    def classify(self, feats: torch.Tensor) -> torch.Tensor:
        return self.engine.classify(feats)

    @torch.no_grad()
    def run(self, tiles: np.ndarray) -> DenseOutputs:
        base = self.engine.run(tiles)
        centre, fmap = base.centre.float().clone(), base.fmap.float().clone()
        for flip in self.flips:
            img_axis, map_axis, channel = (2, 3, 1) if flip == "h" else (1, 2, 2)
            out = self.engine.run(np.ascontiguousarray(np.flip(tiles, axis=img_axis)))
            c = out.centre.float().flip(map_axis)
            c[:, channel] = 0.75 - c[:, channel]
            centre += c
            fmap += out.fmap.float().flip(map_axis)
        n = 1 + len(self.flips)
        return DenseOutputs((centre / n).to(base.centre.dtype), fmap / n)  # the map's mean in fp32, unrounded
