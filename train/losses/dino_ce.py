"""DINO cross-entropy between teacher and student prototype logits, with the teacher centred by an EMA centre
(DINO) or by Sinkhorn-Knopp (DINOv2/SwAV), which balances the prototypes within the batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def soft_cross_entropy(student_logits: torch.Tensor, q: torch.Tensor, student_temp: float) -> torch.Tensor:
    """Mean over rows of ``-sum_k q_k log softmax(s / T_s)_k`` (0 for an empty batch, with a gradient path)."""
    if student_logits.shape[0] == 0:
        return student_logits.sum() * 0
    log_p = F.log_softmax(student_logits.float() / student_temp, dim=-1)
    return -(q.detach() * log_p).sum(-1).mean()


def centred_teacher(teacher_logits: torch.Tensor, center: torch.Tensor, teacher_temp: float) -> torch.Tensor:
    """DINO targets ``softmax((t - center) / T_t)``."""
    return F.softmax((teacher_logits.float() - center) / teacher_temp, dim=-1)


@torch.no_grad()
def sinkhorn_knopp(teacher_logits: torch.Tensor, teacher_temp: float, iterations: int = 3) -> torch.Tensor:
    """Targets whose rows sum to 1 and whose columns (prototypes) are used about equally over the batch.

    When distributed, the batch is every process's rows (the sums are all-reduced), as in DINOv2.
    """
    dist = _distributed()

    def reduce(x: torch.Tensor, op=None) -> torch.Tensor:
        if dist:
            torch.distributed.all_reduce(x, op=op or torch.distributed.ReduceOp.SUM)
        return x

    logits = teacher_logits.float() / teacher_temp
    peak = logits.max() if logits.numel() else torch.tensor(float("-inf"), device=logits.device)
    peak = reduce(peak.clone(), torch.distributed.ReduceOp.MAX if dist else None)
    q = (logits - peak).exp().T  # [K, B]
    rows = reduce(torch.tensor(float(q.shape[1]), device=q.device))
    if rows == 0:
        return q.T
    k = q.shape[0]
    q /= reduce(q.sum())
    for _ in range(iterations):
        q /= reduce(q.sum(dim=1, keepdim=True)).clamp_min(1e-30) * k
        q /= q.sum(dim=0, keepdim=True).clamp_min(1e-30) * rows
    return (q * rows).T


@torch.no_grad()
def update_center(center: torch.Tensor, teacher_logits: torch.Tensor, momentum: float) -> torch.Tensor:
    """EMA of the teacher's mean logits (all-reduced across processes when distributed)."""
    if teacher_logits.shape[0] == 0:
        return center
    batch_center = teacher_logits.float().mean(0, keepdim=True)
    if _distributed():
        torch.distributed.all_reduce(batch_center)
        batch_center /= torch.distributed.get_world_size()
    return center * momentum + batch_center * (1 - momentum)
