"""DINO-style Vision Transformer with the parameter names of the official MUSE checkpoints.

Names follow DINO's ``vision_transformer.py`` (``patch_embed.proj``, ``blocks.i.attn.qkv``, ``norm``...), which is
what MUSE's ``ViTBackbone`` wraps as ``encoder.encoder``. qkv bias on, LayerNorm eps 1e-6, MLP ratio 4.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def resample_pos_embed(pos_embed: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
    """Bicubically resample a ``[1, 1 + g*g, D]`` position embedding to ``grid_hw`` patches (cls kept as is)."""
    cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]
    old = int(math.isqrt(patch_pos.shape[1]))
    if old * old != patch_pos.shape[1]:
        raise ValueError(f"pos_embed has {patch_pos.shape[1]} patch positions, not a square grid")
    if (old, old) == tuple(grid_hw):
        return pos_embed
    dim = patch_pos.shape[-1]
    grid = patch_pos.reshape(1, old, old, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=grid_hw, mode="bicubic", align_corners=False).to(pos_embed.dtype)
    return torch.cat([cls_pos, grid.permute(0, 2, 3, 1).reshape(1, -1, dim)], dim=1)


class VisionTransformer(nn.Module):
    """ViT returning the normalised tokens of selected blocks (``taps``)."""

    def __init__(self, img_size: int, patch_size: int, embed_dim: int, depth: int, num_heads: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.patch_embed = PatchEmbed(patch_size, 3, embed_dim)
        grid = img_size // patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, embed_dim))
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(_init_vit_weights)

    def forward(self, x: torch.Tensor, taps: tuple[int, ...]) -> list[torch.Tensor]:
        """Return ``LayerNorm(tokens)`` after each block index in ``taps`` ([B, 1 + N, D] each)."""
        b, _, h, w = x.shape
        gh, gw = h // self.patch_size, w // self.patch_size
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(b, -1, -1), tokens], dim=1)
        tokens = tokens + resample_pos_embed(self.pos_embed, (gh, gw))
        outs = []
        for i, block in enumerate(self.blocks):
            tokens = block(tokens)
            if i in taps:
                outs.append(self.norm(tokens))
        return outs


def _init_vit_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class ViTEncoder(nn.Module):
    """MUSE's ViT encoder: taps (2, 5, 8, 11) through the final norm, as spatial maps, plus the cls token."""

    def __init__(self, img_size: int, embed_dim: int, depth: int, num_heads: int, taps=(2, 5, 8, 11)) -> None:
        super().__init__()
        self.encoder = VisionTransformer(img_size, 16, embed_dim, depth, num_heads)
        self.taps = tuple(taps)
        self.channels = [embed_dim] * len(taps)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        b, _, h, w = x.shape
        gh, gw = h // 16, w // 16
        outs = self.encoder(x, self.taps)
        maps = [t[:, 1:].transpose(1, 2).reshape(b, -1, gh, gw) for t in outs]
        cls = outs[-1][:, 0][:, :, None, None]
        return maps, cls
