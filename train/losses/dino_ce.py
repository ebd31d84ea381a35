"""DINO cross-entropy between teacher and student prototype logits, with teacher centering."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dino_cross_entropy(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    center: torch.Tensor,
    student_temp: float,
    teacher_temp: float,
) -> torch.Tensor:
    """Mean over rows of ``-sum_k q_k log p_k`` with ``q = softmax((t - center)/T_t)``, ``p = softmax(s/T_s)``."""
    if student_logits.shape[0] == 0:
        return student_logits.sum() * 0
    q = F.softmax((teacher_logits.float() - center) / teacher_temp, dim=-1).detach()
    log_p = F.log_softmax(student_logits.float() / student_temp, dim=-1)
    return -(q * log_p).sum(-1).mean()


@torch.no_grad()
def update_center(center: torch.Tensor, teacher_logits: torch.Tensor, momentum: float) -> torch.Tensor:
    """EMA of the teacher's mean logits (all-reduced across processes when distributed)."""
    if teacher_logits.shape[0] == 0:
        return center
    batch_center = teacher_logits.float().mean(0, keepdim=True)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(batch_center)
        batch_center /= torch.distributed.get_world_size()
    return center * momentum + batch_center * (1 - momentum)
