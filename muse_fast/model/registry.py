"""Named model constructors (``create_model``) and the full network ``MuseNet``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from ..errors import ConfigError
from .backbone import MuseBackbone, resnet18_backbone, resnet50_backbone, vit_backbone
from .heads import CentreHead, PointClassifier

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_normalise(images: torch.Tensor) -> torch.Tensor:
    """RGB ``[B, 3, H, W]`` in 0..255 -> ImageNet-normalised, as every MUSE backbone expects."""
    mean = 255.0 * torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = 255.0 * torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


class DenseOutputs(NamedTuple):
    centre: torch.Tensor  # [B, 3, H/4, W/4]: centre logit, dx, dy
    fmap: torch.Tensor  # [B, D, H/4, W/4] point-feature map


class MuseNet(nn.Module):
    """Backbone + centre head + point classifier.

    Input: RGB ``[B, 3, H, W]`` float in 0..255 (normalised inside), H and W multiples of 32.
    """

    stride = 4

    def __init__(self, backbone: MuseBackbone, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.centre_head = CentreHead(backbone.out_dim)
        self.classifier = PointClassifier(backbone.out_dim, num_classes)
        self.register_buffer("mean", 255.0 * torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", 255.0 * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor, fp32_logits: bool = False) -> DenseOutputs:
        """``fp32_logits``: the centre head's output layer in fp32 under autocast (see :class:`CentreHead`)."""
        out = self.backbone((images - self.mean) / self.std)
        return DenseOutputs(self.centre_head(out.fmap, fp32_logits), out.fmap)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build_backbone: Callable[[int], MuseBackbone]
    official_variant: str | None  # name of the manifest in muse-official-keys, if checkpoints exist
    description: str


MODELS: dict[str, ModelSpec] = {
    s.name: s
    for s in [
        ModelSpec(
            "muse_vit_t16",
            lambda size: vit_backbone(size, 192, 12, 3),
            None,
            "ViT-Ti/16 (D=192, 3 heads) + MUSE decoder (official geometry); the earlier default",
        ),
        ModelSpec(
            "muse_vit_t16_px",
            lambda size: vit_backbone(size, 192, 12, 3, align_corners=False),
            None,
            "ViT-Ti/16 + MUSE decoder with pixel-centred resizes (align_corners=False)",
        ),
        ModelSpec(
            "muse_vit_t16_stem",
            lambda size: vit_backbone(size, 192, 12, 3, stem=True, align_corners=False),
            None,
            "ViT-Ti/16 + conv stem into the finest decoder levels + pixel-centred MUSE decoder",
        ),
        ModelSpec(
            "muse_vit_s16",
            lambda size: vit_backbone(size, 384, 12, 6),
            "muse_vit-s-16",
            "ViT-S/16 + MUSE decoder (official MUSE ViT-S/16 layout)",
        ),
        ModelSpec(
            "muse_vit_b16",
            lambda size: vit_backbone(size, 768, 12, 12),
            "muse_vit-b-16",
            "ViT-B/16 + MUSE decoder (official MUSE ViT-B/16 layout)",
        ),
        ModelSpec(
            "muse_r18",
            lambda size: resnet18_backbone(size),
            None,
            "ResNet-18 + pixel-centred MUSE decoder (a small CPU variant; no official checkpoint)",
        ),
        ModelSpec(
            "muse_r50",
            lambda size: resnet50_backbone(size),
            "muse_r50",
            "ResNet-50 + MUSE CattedDecoder (official MUSE R50 layout)",
        ),
    ]
}


def create_backbone(name: str, img_size: int = 224) -> MuseBackbone:
    return _spec(name).build_backbone(img_size)


def create_model(name: str, num_classes: int = 3, img_size: int = 224) -> MuseNet:
    """Build a named MUSE network; unknown names raise with the list of known ones."""
    return MuseNet(create_backbone(name, img_size), num_classes)


def _spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ConfigError(f"unknown model '{name}'; choose one of: {', '.join(MODELS)}")
    return MODELS[name]
