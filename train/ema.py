"""Exponential moving average of a student into its teacher (DINO, mean teacher) or into averaged weights."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float, average_buffers: bool = False) -> None:
    """teacher = m * teacher + (1 - m) * student on the parameters (two foreach calls).

    Buffers (BN statistics) are copied from the student, as DINO and the mean teacher do, or, with
    ``average_buffers``, averaged like the parameters (integer buffers such as BN's step counter are copied), so that
    averaged weights are evaluated with statistics that match them.
    """
    t_params = list(teacher.parameters())
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, [p.detach() for p in student.parameters()], alpha=1 - momentum)
    for tb, sb in zip(teacher.buffers(), student.buffers()):
        if average_buffers and tb.is_floating_point():
            tb.mul_(momentum).add_(sb, alpha=1 - momentum)
        else:
            tb.copy_(sb)


def warmed_momentum(momentum: float, step: int) -> float:
    """``min(momentum, (1 + step) / (10 + step))``: early averages forget the random start quickly (as timm's EMA)."""
    return min(momentum, (1 + step) / (10 + step))
