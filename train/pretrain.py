"""MUSE self-supervised pretraining: NuLo (nucleus-level) + image-level self-distillation across scales.

    python -m train.pretrain --rois runs/rois --out runs/pretrain [--steps 1000] [--lambda-nu 1.0]
    python -m train.pretrain --stage lfov --init runs/pretrain/backbone.pth --out runs/lfov   # 512-px views
    torchrun --nproc_per_node 2 -m train.pretrain ...                                         # DDP (gloo on CPU)

Student and EMA teacher come from the same constructor. Every step, each ROI gives a teacher-scale and a
student-scale view (separate MPPs, overlapping crops, flips/rotations, colour jitter). Both views go through both
networks (symmetric, as in DINO). Point features at the nuclei visible in both views are sampled with
``kernels.point_gather`` (with gradients) and projected by the nucleus head; the cls token by the image head.
Loss: ``L = L_image + lambda_nu * L_nu`` (DINO cross-entropy with centering); ``lambda_nu = 0`` is the image-only
DINO baseline. Outputs: ``OUT/checkpoint.pt`` (exact resume) and ``OUT/backbone.pth`` (teacher backbone in the
official MUSE layout, loadable with ``load_official_checkpoint`` and ``train.finetune --init``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from muse_fast.errors import ConfigError
from muse_fast.kernels.point_gather import gather_points
from muse_fast.model import create_backbone, load_official_checkpoint
from muse_fast.model.registry import imagenet_normalise
from muse_fast.output.atomic import atomic_write

from .amp import autocast, check_amp
from .config import one_line_errors, parse_config, save_config
from .data.augment import colour_jitter
from .data.rois import RoiStore
from .data.views import ViewConfig, view_pair
from .ema import ema_update
from .heads import DINOHead
from .losses.dino_ce import centred_teacher, sinkhorn_knopp, soft_cross_entropy, update_center
from .schedules import cosine, linear_then_constant


@dataclass(frozen=True)
class PretrainConfig:
    rois: str = "runs/rois"
    out: str = "runs/pretrain"
    model: str = "muse_vit_t16"
    stage: str = "muse"  # "muse" (224-px views) or "lfov" (512-px views, continued from --init)
    init: str = ""  # backbone checkpoint in the official layout (e.g. OUT/backbone.pth of an earlier stage)
    view_size: int = 0  # 0 = 224 for muse, 512 for lfov
    mpp_min: float = 0.25  # view mpp range; floored per ROI at its own resolution (train/data/views.py)
    mpp_max: float = 1.0
    colour_jitter: float = 1.0  # strength of the per-view brightness/contrast/saturation/stain jitter (0 = off)
    batch_size: int = 8  # ROIs per step and process (two views each)
    steps: int = 1000
    lr: float = 5e-5  # 5e-4 and 1e-3 wrecked ViT-Ti from scratch at 8 ROIs per step (docs/results.md)
    min_lr: float = 1e-6
    warmup_steps: int = 50
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    momentum_teacher: float = 0.996
    teacher_temp: float = 0.07
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_steps: int = 300
    student_temp: float = 0.1
    center_momentum: float = 0.9
    centering: str = "sinkhorn"  # teacher centring: "sinkhorn" (Sinkhorn-Knopp, DINOv2) or "ema" (DINO)
    out_dim: int = 4096  # prototypes of each head (image and nucleus)
    head_hidden: int = 1024
    head_bottleneck: int = 256
    lambda_nu: float = 1.0
    max_matched: int = 128
    clip_grad: float = 3.0
    checkpoint_every: int = 100
    seed: int = 2025
    threads: int = 0
    device: str = "cpu"
    amp: str = "none"  # "bf16" autocast (CUDA, or a CPU with AMX/AVX512-BF16) or "fp16" (CUDA only)

    def resolved(self) -> PretrainConfig:
        if self.stage not in ("muse", "lfov"):
            raise ConfigError(f"unknown stage '{self.stage}'; choose muse or lfov")
        if self.centering not in ("ema", "sinkhorn"):
            raise ConfigError(f"unknown --centering '{self.centering}'; choose ema or sinkhorn")
        if self.stage == "lfov" and not self.init:
            raise ConfigError("--stage lfov continues from 224-px weights: pass --init OUT/backbone.pth")
        check_amp(self.amp, self.device)
        size = self.view_size or (512 if self.stage == "lfov" else 224)
        if size % 32:
            raise ConfigError(f"--view-size must be a multiple of 32, got {size}")
        return replace(self, view_size=size)


class Branch(nn.Module):
    """Backbone + image head + nucleus head; student and teacher are two instances."""

    def __init__(self, cfg: PretrainConfig) -> None:
        super().__init__()
        self.backbone = create_backbone(cfg.model, cfg.view_size)
        dim, cls_dim = self.backbone.out_dim, _cls_dim(self.backbone)
        self.image_head = DINOHead(cls_dim, cfg.out_dim, cfg.head_hidden, cfg.head_bottleneck)
        self.nucleus_head = DINOHead(dim, cfg.out_dim, cfg.head_hidden, cfg.head_bottleneck)

    def forward(self, images: torch.Tensor, xy: torch.Tensor, counts: torch.Tensor):
        out = self.backbone(images)
        image_logits = self.image_head(out.cls.flatten(1))
        feats = gather_points(out.fmap, xy, images.shape[-2:], counts)  # [N_views, M, D]
        valid = torch.arange(xy.shape[1], device=xy.device)[None, :] < counts[:, None]
        return image_logits, self.nucleus_head(feats[valid])


def _cls_dim(backbone) -> int:
    channels = getattr(backbone.encoder, "channels", [backbone.out_dim])
    return channels[-1]


CROSS_SCALE = 1.5  # the field must hold a view this much coarser than the finest, or every pair is one scale


def check_field(store: RoiStore, cfg: PretrainConfig) -> None:
    """Refuse a store whose ROIs are too small for the views: with a field barely larger than one view, both views of
    a pair are the whole ROI, upsampled (the degenerate LFoV of an earlier recipe), and no cross-scale pair exists."""
    finest = max(cfg.mpp_min, store.mpp)
    need = CROSS_SCALE * cfg.view_size * finest
    if store.field_um < need:
        raise ConfigError(
            f"ROI store {store.folder} covers {store.field_um:.0f} um per ROI, too small for {cfg.view_size}-px views "
            f"at {finest} to {CROSS_SCALE * finest:.2f} um/px ({need:.0f} um needed); rebuild it with "
            f"python -m train.detect_nuclei --size {int(np.ceil(need / store.mpp))} (slides with --split '' for LFoV)"
        )


def make_step_batch(store: RoiStore, cfg: PretrainConfig, step: int, rank: int):
    """The views of one step, drawn from RNGs seeded by (seed, rank, step): resuming needs no RNG state."""
    rng = np.random.default_rng([cfg.seed, rank, step])
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    vcfg = ViewConfig(cfg.view_size, cfg.mpp_min, cfg.mpp_max, max_matched=cfg.max_matched)
    views_a, views_b, pts_a, pts_b = [], [], [], []
    for i in rng.integers(0, len(store), cfg.batch_size):
        roi = store[int(i)]
        a, b, matched = view_pair(roi, roi.mpp, vcfg, rng)
        views_a.append(a.image)
        views_b.append(b.image)
        pts_a.append(a.xy[matched])
        pts_b.append(b.xy[matched])
    m = max(1, max(len(p) for p in pts_a))
    xy = np.zeros((2 * cfg.batch_size, m, 2), np.float32)
    for i, p in enumerate(pts_a + pts_b):
        xy[i, : len(p)] = p
    counts = torch.tensor([len(p) for p in pts_a + pts_b], dtype=torch.int32)
    images = torch.from_numpy(np.stack(views_a + views_b)).permute(0, 3, 1, 2).float()
    images = colour_jitter(images, gen, cfg.colour_jitter)
    return imagenet_normalise(images), torch.from_numpy(xy), counts


def muse_loss(student: nn.Module, teacher: nn.Module, batch, centers: dict, cfg: PretrainConfig, temp_t: float):
    """Symmetric image + nucleus self-distillation for one step; returns (loss, parts, teacher logits)."""
    images, xy, counts = batch
    b = images.shape[0] // 2
    s_img, s_nu = student(images, xy, counts)
    with torch.no_grad():
        t_img, t_nu = teacher(images, xy, counts)

    def targets(logits: torch.Tensor, head: str) -> torch.Tensor:
        if cfg.centering == "sinkhorn":
            return sinkhorn_knopp(logits, temp_t)
        return centred_teacher(logits, centers[head], temp_t)

    swap = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)])  # view A <-> view B of the same ROI
    l_image = soft_cross_entropy(s_img, targets(t_img, "image")[swap], cfg.student_temp)
    # nuclei rows are laid out view by view; the same nucleus sits at the same row of views A and B
    n_a = int(counts[:b].sum())
    q_nu = targets(t_nu, "nucleus")
    l_nu = soft_cross_entropy(s_nu, torch.cat([q_nu[n_a:], q_nu[:n_a]]), cfg.student_temp)
    loss = l_image + cfg.lambda_nu * l_nu
    return loss, {"image": l_image.item(), "nucleus": l_nu.item()}, (t_img, t_nu)


def schedules(cfg: PretrainConfig) -> dict[str, np.ndarray]:
    return {
        "lr": cosine(cfg.lr, cfg.min_lr, cfg.steps, cfg.warmup_steps),
        "wd": cosine(cfg.weight_decay, cfg.weight_decay_end, cfg.steps),
        "momentum": cosine(cfg.momentum_teacher, 1.0, cfg.steps),
        "teacher_temp": linear_then_constant(
            cfg.warmup_teacher_temp, cfg.teacher_temp, cfg.steps, cfg.warmup_teacher_temp_steps
        ),
    }


def official_backbone_state(branch: Branch) -> dict:
    """The teacher backbone as the official checkpoints store it: ``{'teacher': {'module.backbone.' + key: ...}}``."""
    return {"teacher": {f"module.backbone.{k}": v.detach().cpu() for k, v in branch.backbone.state_dict().items()}}


def _save(path: Path, payload: dict) -> None:
    with atomic_write(path, "wb") as fh:
        torch.save(payload, fh)


def pretrain(cfg: PretrainConfig) -> dict:
    """Run (or resume) pretraining; returns the last step's losses."""
    cfg = cfg.resolved()
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank = 0
    if distributed:
        backend = "nccl" if cfg.device == "cuda" else "gloo"
        torch.distributed.init_process_group(backend)
        rank = torch.distributed.get_rank()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    store = RoiStore(Path(cfg.rois))
    check_field(store, cfg)
    student, teacher = Branch(cfg).to(device), Branch(cfg).to(device)
    if cfg.init:
        backbone = load_official_checkpoint(cfg.init, cfg.model, cfg.view_size)
        student.backbone.load_state_dict(backbone.state_dict())
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad_(False)
    params = [p for p in student.parameters() if p.requires_grad]
    regularised = [p for p in params if p.ndim > 1]
    others = [p for p in params if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": regularised}, {"params": others, "weight_decay": 0.0}], lr=cfg.lr)
    centers = {k: torch.zeros(1, cfg.out_dim, device=device) for k in ("image", "nucleus")}
    start_step = 0
    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        student.load_state_dict(ckpt["student"])
        teacher.load_state_dict(ckpt["teacher"])
        opt.load_state_dict(ckpt["optimizer"])
        centers = {k: v.to(device) for k, v in ckpt["centers"].items()}
        start_step = int(ckpt["step"]) + 1
    model = student
    if distributed:
        model = nn.parallel.DistributedDataParallel(student, find_unused_parameters=cfg.lambda_nu == 0)
    if rank == 0:
        save_config(cfg, out / "config.json")
    sched = schedules(cfg)
    scaler = torch.amp.GradScaler(enabled=cfg.amp == "fp16")
    parts: dict = {}
    started = time.time()
    log = open(out / "log.jsonl", "a") if rank == 0 else None
    for step in range(start_step, cfg.steps):
        opt.param_groups[0]["lr"] = opt.param_groups[1]["lr"] = float(sched["lr"][step])
        opt.param_groups[0]["weight_decay"] = float(sched["wd"][step])
        batch = [t.to(device) for t in make_step_batch(store, cfg, step, rank)]
        with autocast(cfg.amp, device):
            loss, parts, (t_img, t_nu) = muse_loss(
                model, teacher, batch, centers, cfg, float(sched["teacher_temp"][step])
            )
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad)
        scaler.step(opt)
        scaler.update()
        ema_update(teacher, student, float(sched["momentum"][step]))
        if cfg.centering == "ema":  # Sinkhorn-Knopp needs no centre (and this skips two all-reduces per step)
            centers["image"] = update_center(centers["image"], t_img, cfg.center_momentum)
            centers["nucleus"] = update_center(centers["nucleus"], t_nu, cfg.center_momentum)
        parts = {
            "step": step,
            "loss": loss.item(),
            **parts,
            "matched": int(batch[2].sum()) // 2,
            "minutes": round((time.time() - started) / 60, 2),
        }
        if log:
            log.write(json.dumps(parts) + "\n")
            log.flush()
            if step % 20 == 0:
                print(json.dumps(parts), file=sys.stderr, flush=True)
        last = step == cfg.steps - 1
        if rank == 0 and ((step + 1) % cfg.checkpoint_every == 0 or last):
            _save(
                ckpt_path,
                {
                    "step": step,
                    "student": student.state_dict(),
                    "teacher": teacher.state_dict(),
                    "optimizer": opt.state_dict(),
                    "centers": centers,
                    "config": asdict(cfg),
                },
            )
            _save(
                out / "backbone.pth",
                {
                    **official_backbone_state(teacher),
                    "muse_fast": {
                        "model": cfg.model,
                        "step": step,
                        "view_size": cfg.view_size,
                        "lambda_nu": cfg.lambda_nu,
                    },
                },
            )
    if log:
        log.close()
    if distributed:
        torch.distributed.destroy_process_group()
    return parts


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(PretrainConfig, argv, __doc__.splitlines()[0])
    print(json.dumps(pretrain(cfg)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
