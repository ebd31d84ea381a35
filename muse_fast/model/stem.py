"""A light high-resolution convolutional stem that feeds the decoder's finest levels (ViTDet / ViT-Adapter style).

A ViT sees the image only through 16-px patches, so the stride-4 and stride-8 decoder levels are upsampled token
features. The stem reads the raw (normalised) image with a few strided 3x3 convolutions and adds its stride-4 and
stride-8 maps to the decoder skips ``e1`` and ``e2``. Its parameters live under ``stem.``, outside the official
encoder and decoder names, so released MUSE checkpoints still load into the encoder and decoder unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from .decoder import ConvLayer


class ConvStem(nn.Module):
    """``[B, 3, H, W]`` -> stride-4 ``[B, c1, H/4, W/4]`` and stride-8 ``[B, c2, H/8, W/8]`` maps.

    The last convolution of each output has zero-initialised BN scale, so at initialisation the stem adds nothing and
    the network starts as the plain MUSE decoder.
    """

    def __init__(self, c1: int, c2: int, width: int = 32) -> None:
        super().__init__()
        self.down2 = nn.Sequential(_strided(3, width), ConvLayer(width, width))
        self.down4 = nn.Sequential(_strided(width, c1), ConvLayer(c1, c1, act=False))
        self.down8 = nn.Sequential(_strided(c1, c2), ConvLayer(c2, c2, act=False))
        for branch in (self.down4, self.down8):
            nn.init.zeros_(branch[-1].layer[1].weight)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        s4 = self.down4(self.down2(x))
        return [s4, self.down8(torch.relu(s4))]


def _strided(in_ch: int, out_ch: int) -> nn.Sequential:
    """3x3 convolution at stride 2, BN, ReLU."""
    conv = nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(out_ch), nn.ReLU())
