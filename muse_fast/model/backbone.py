"""The MUSE backbone: encoder + decoder, state-dict compatible with the official ``basic_model``."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .decoder import Decoder
from .resnet import BasicBlock, ResNetEncoder
from .stem import ConvStem
from .vit import ViTEncoder


class BackboneOutput(NamedTuple):
    fmap: torch.Tensor  # [B, out_dim, H/4, W/4]
    cls: torch.Tensor  # [B, C_img, 1, 1] image-level token


class MuseBackbone(nn.Module):
    """``encoder`` + ``decoder`` (+ optional ``stem``).

    The encoder and decoder keys equal the official checkpoints' after stripping ``module.backbone.``; a conv stem
    (:class:`ConvStem`) adds keys under ``stem.`` only.
    """

    def __init__(self, encoder: nn.Module, decoder: Decoder, stem: ConvStem | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        if stem is not None:
            self.stem = stem
        self.out_dim = decoder.out_dim

    def forward(self, x: torch.Tensor) -> BackboneOutput:
        feats, cls = self.encoder(x)
        extra = self.stem(x) if hasattr(self, "stem") else None
        return BackboneOutput(self.decoder(feats, extra), cls)


def vit_backbone(
    img_size: int, embed_dim: int, depth: int, num_heads: int, stem: bool = False, align_corners: bool = True
) -> MuseBackbone:
    """ViT encoder + MUSE decoder. ``stem`` adds a conv stem; ``align_corners=False`` is pixel-centred geometry."""
    d = embed_dim
    encoder = ViTEncoder(img_size, embed_dim, depth, num_heads)
    decoder = Decoder([d // 4, d // 2, d, 2 * d], hyper_ch=d // 4, dim_map_from=d, align_corners=align_corners)
    return MuseBackbone(encoder, decoder, ConvStem(d // 4, d // 2) if stem else None)


def resnet50_backbone(img_size: int = 224) -> MuseBackbone:
    encoder = ResNetEncoder()
    return MuseBackbone(encoder, Decoder(encoder.channels, hyper_ch=encoder.channels[-1] // 8))


def resnet18_backbone(img_size: int = 224) -> MuseBackbone:
    """ResNet-18 encoder + pixel-centred MUSE decoder (its stages already reach stride 4: no stem needed)."""
    encoder = ResNetEncoder((2, 2, 2, 2), BasicBlock)
    return MuseBackbone(encoder, Decoder(encoder.channels, hyper_ch=encoder.channels[-1] // 8, align_corners=False))
