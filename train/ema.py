"""Exponential moving average of a student into its teacher (DINO, mean teacher)."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """teacher = m * teacher + (1 - m) * student (parameters, two foreach calls); buffers (BN statistics) copied."""
    t_params = list(teacher.parameters())
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, [p.detach() for p in student.parameters()], alpha=1 - momentum)
    for tb, sb in zip(teacher.buffers(), student.buffers()):
        tb.copy_(sb)
