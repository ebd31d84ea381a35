"""Loading the released MUSE checkpoints (``*.pth`` with a DINO-style ``teacher`` dict) into our backbones."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import WeightsError
from .backbone import MuseBackbone
from .registry import create_backbone
from .vit import resample_pos_embed
from .weights import state_dict_mismatch

OFFICIAL_PREFIX = "module.backbone."
POS_EMBED_KEY = "encoder.encoder.pos_embed"


def official_pos_resample(pos_embed: torch.Tensor, img_size: int, patch: int = 16) -> torch.Tensor:
    """The official loader's resample: bicubic with ``scale_factor=(g + 0.1)/sqrt(N)``, applied even at equal size."""
    cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]
    n = patch_pos.shape[1]
    src, dim, g = int(math.isqrt(n)), patch_pos.shape[-1], img_size // patch
    grid = patch_pos.reshape(1, src, src, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, scale_factor=(g + 0.1) / math.sqrt(n), mode="bicubic", align_corners=False)
    return torch.cat([cls_pos, grid.permute(0, 2, 3, 1).reshape(1, -1, dim)], dim=1)


def backbone_state_from_official(checkpoint: dict) -> dict[str, torch.Tensor]:
    """Teacher weights with the ``module.backbone.`` prefix stripped; heads and other entries dropped."""
    if "teacher" not in checkpoint:
        raise WeightsError(f"checkpoint has no 'teacher' entry (keys: {sorted(checkpoint)[:6]}); pass a MUSE .pth file")
    teacher = checkpoint["teacher"]
    return {k[len(OFFICIAL_PREFIX) :]: v for k, v in teacher.items() if k.startswith(OFFICIAL_PREFIX)}


def load_official_checkpoint(
    path: str | Path | dict, variant: str, img_size: int = 224, exact_official_pos_embed: bool = False
) -> MuseBackbone:
    """Build ``variant`` (e.g. ``muse_vit_s16``) and load the teacher backbone of an official MUSE checkpoint strictly.

    The ViT position embedding is resampled bicubically to ``img_size // 16``; ``exact_official_pos_embed``
    reproduces the official near-identity resample bit for bit. Missing ``num_batches_tracked`` buffers are filled in,
    as the official loader tolerates them. A variant with a conv stem (``muse_vit_t16_stem``) keeps its own initial
    ``stem.*`` weights, which no official checkpoint has. Any other missing or extra key is an error.
    """
    checkpoint = path
    if not isinstance(path, dict):
        if not Path(path).is_file():
            raise WeightsError(f"checkpoint not found: {path}; download it from Hugging Face Alibaba-DAMO-Academy/MUSE")
        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = backbone_state_from_official(checkpoint)
    backbone = create_backbone(variant, img_size)
    own = backbone.state_dict()
    if POS_EMBED_KEY in state and POS_EMBED_KEY in own:
        grid = img_size // 16
        if exact_official_pos_embed:
            state[POS_EMBED_KEY] = official_pos_resample(state[POS_EMBED_KEY], img_size)
        else:
            state[POS_EMBED_KEY] = resample_pos_embed(state[POS_EMBED_KEY], (grid, grid))
    for key, value in own.items():
        if (key.endswith("num_batches_tracked") or key.startswith("stem.")) and key not in state:
            state[key] = value
    problem = state_dict_mismatch(own, state)
    if problem:
        raise WeightsError(f"checkpoint does not fit '{variant}': {problem}; check the variant name and image size")
    backbone.load_state_dict(state, strict=True)
    return backbone
