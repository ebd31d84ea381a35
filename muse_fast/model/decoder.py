"""MUSE's UNet decoder and HyperFeats (method.md section 2), with the official parameter names.

The ViT decoder first maps the four stride-16 taps to ``[D/4, D/2, D, 2D]`` channels at strides 4/8/16/32
(``dim_map_layers``); the ResNet decoder takes the four stages as they are. Then three UNet blocks and HyperFeats
give the dense map ``f_map`` at stride 4 with ``sum(hyper)`` channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def resize(x: torch.Tensor, size: tuple[int, int], align_corners: bool = True) -> torch.Tensor:
    """Bilinear resize; ``align_corners=True`` is the official convention throughout the decoder.

    ``align_corners=False`` is pixel-centred: cell ``i`` of a stride-``s`` map covers input pixels ``[s*i, s*i + s)``
    at every level, so a stride-16 token and the stride-4 cells inside it stay in place. With ``True`` the corner
    cells are pinned together instead, which pulls features up to ~8 px toward the tile centre at 224 px.
    """
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


class ConvLayer(nn.Module):
    """``layer = [conv (no bias), BN, ReLU?]`` as in the official ``ConvLayer``."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, act: bool = True) -> None:
        super().__init__()
        mods: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        if act:
            mods.append(nn.ReLU(inplace=True))
        self.layer = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class BasicResBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = ConvLayer(ch, ch)
        self.conv2 = ConvLayer(ch, ch, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(self.conv1(x)) + x)


class UnetBlock(nn.Module):
    """Upsample the decoder map to the skip's size, concatenate ``[dec, skip]``, conv down, residual block."""

    def __init__(self, dec_ch: int, enc_ch: int, out_ch: int, align_corners: bool = True) -> None:
        super().__init__()
        self.first_block = ConvLayer(dec_ch + enc_ch, out_ch)
        self.last_block = BasicResBlock(out_ch)
        self.align_corners = align_corners

    def forward(self, x_dec: torch.Tensor, x_enc: torch.Tensor) -> torch.Tensor:
        x = torch.cat([resize(x_dec, x_enc.shape[-2:], self.align_corners), x_enc], dim=1)
        return self.last_block(self.first_block(x))


class HyperFeats(nn.Module):
    def __init__(self, in_channels: list[int], out_ch: int, align_corners: bool = True) -> None:
        super().__init__()
        self.conv_list = nn.ModuleList([ConvLayer(c, out_ch, kernel=1, act=False) for c in in_channels])
        self.align_corners = align_corners

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        size = feats[0].shape[-2:]
        ac = self.align_corners
        return torch.cat([resize(conv(f), size, ac) for conv, f in zip(self.conv_list, feats)], dim=1)


class Decoder(nn.Module):
    """Skips ``e1..e4`` (strides 4..32) -> ``f_map`` at stride 4 with ``4 * hyper_ch`` channels.

    ``dim_map_from``: the ViT tap width D; when given, the skips are made from four stride-16 taps by 1x1 maps to
    ``skip_channels`` and bilinear resizes (``dim_map_layers``). ``skip_channels`` are the channels of e1..e4.
    ``align_corners``: the resize convention (official: True; pixel-centred: False; see :func:`resize`). It has no
    parameters, so checkpoints load either way. ``forward(feats, extra)`` adds optional ``extra`` maps (a conv stem's
    stride-4 and stride-8 features) to the finest skips e1, e2.
    """

    def __init__(
        self, skip_channels: list[int], hyper_ch: int, dim_map_from: int | None = None, align_corners: bool = True
    ) -> None:
        super().__init__()
        c1, c2, c3, c4 = skip_channels
        ac = align_corners
        if dim_map_from is not None:
            self.dim_map_layers = nn.ModuleList([nn.Conv2d(dim_map_from, c, 1, bias=False) for c in skip_channels])
        self.decoder3 = UnetBlock(c4, c3, c3, ac)
        self.decoder2 = UnetBlock(c3, c2, c2, ac)
        self.decoder1 = UnetBlock(c2, c1, c1, ac)
        self.hyper_feats = HyperFeats([c1, c2, c3, c4], hyper_ch, ac)
        self.out_dim = 4 * hyper_ch
        self.align_corners = align_corners

    def skips_from_taps(self, taps: list[torch.Tensor]) -> list[torch.Tensor]:
        gh, gw = taps[0].shape[-2:]
        sizes = [(gh * 4, gw * 4), (gh * 2, gw * 2), (gh, gw), (gh // 2, gw // 2)]
        return [resize(m(t), s, self.align_corners) for m, t, s in zip(self.dim_map_layers, taps, sizes)]

    def forward(self, feats: list[torch.Tensor], extra: list[torch.Tensor] | None = None) -> torch.Tensor:
        e1, e2, e3, e4 = self.skips_from_taps(feats) if hasattr(self, "dim_map_layers") else feats
        if extra is not None:
            e1, e2 = e1 + extra[0], e2 + extra[1]
        d3 = self.decoder3(e4, e3)
        d2 = self.decoder2(d3, e2)
        d1 = self.decoder1(d2, e1)
        return self.hyper_feats([d1, d2, d3, e4])
