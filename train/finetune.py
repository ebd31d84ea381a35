"""Supervised detection + classification fine-tuning on BRCA-M2C.

    python -m train.finetune --out runs/finetune [--model muse_r18] [--steps 1200] [--config cfg.yaml]

Trains the centre heatmap + offsets (focal + L1) and the point classifier (class-balanced cross-entropy on features
sampled at the ground-truth nuclei; ``--cls-loss ce|balanced|focal``) on random 224-px views of the official train
split, with stain (HED), colour, blur, JPEG and +-20% scale augmentation (:mod:`train.data.robust`), evaluates on
the val split every ``eval_every`` steps with the inference path, and keeps the best weights by val macro F1. Writes
``OUT/weights.pt``, ``OUT/config.json`` and ``OUT/log.jsonl``. ``--init`` starts from our weights or a backbone
in the official layout (an official MUSE ``.pth`` or ``train.pretrain``'s ``backbone.pth``). ``--pseudo-rois``
adds the semi-supervised mean-teacher loss on unlabelled context (see ``train.semi``). ``--ema-momentum m``
(0 = off) evaluates and keeps an exponential moving average of the weights instead of the raw weights; the raw ones
are then evaluated beside it and kept in ``OUT/weights_raw.pt``, so one run compares the two. At the end the
selected weights are calibrated on val (the detection threshold from ``--calibrate-thresholds``, see
``train.calibrate``) and written to ``OUT/final.pt``, the file to ship; ``--calibrate-thresholds ''`` skips it.
``--ignore-unlabelled hema,shipped`` leaves likely nuclei without a label out of the centre loss's negatives
(``train.data.label_gaps``). ``--self-train-rois STORE`` adds the store's images, labelled by the shipped weights
with flip TTA (``train.data.self_labels``), as ``--self-train-share`` of the views.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from muse_fast.errors import ConfigError
from muse_fast.kernels.point_gather import gather_points
from muse_fast.model import create_model
from muse_fast.model.checkpoint import load_official_checkpoint
from muse_fast.model.weights import WeightsMeta, load_weights, save_weights, state_dict_mismatch

from .amp import autocast, check_amp
from .calibrate import calibrate_weights, calibration_grid
from .config import one_line_errors, parse_config, save_config
from .data.augment import colour_jitter, random_geometry
from .data.brca import BRCA_MPP, CLASSES, LabelledImage, load_split
from .data.label_gaps import parse_sources, shipped_detector, unlabelled_nuclei
from .data.robust import hed_jitter, random_blur, random_jpeg, random_scaled_crop
from .data.rois import RoiStore
from .data.self_labels import self_labelled
from .data.variety import VarietyConfig, variety_view
from .ema import ema_update, warmed_momentum
from .evaluate import EvalConfig, evaluate_images
from .losses.centre_focal import centre_focal_loss
from .losses.point_class import CLS_LOSSES, class_weights, point_class_loss
from .provenance import finetune_provenance
from .semi import pseudo_label_loss, unlabelled_batch
from .targets import centre_targets, ignore_mask


@dataclass(frozen=True)
class FinetuneConfig:
    out: str = "runs/finetune"
    model: str = "muse_r18"
    init: str = ""  # optional: our weights file, or an official MUSE .pth (backbone only)
    tile_size: int = 224
    batch_size: int = 16
    steps: int = 1200
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    warmup_steps: int = 60
    cls_weight: float = 1.0
    offset_weight: float = 1.0
    eval_every: int = 150
    seed: int = 2025
    threads: int = 0  # torch threads; 0 = library default
    half: bool = True  # store the final weights in fp16
    amp: str = "none"  # "bf16" autocast (CUDA, or a CPU with AMX/AVX512-BF16) or "fp16" (CUDA only)
    device: str = "cpu"
    max_minutes: float = 0.0  # stop early after this wall time (0 = no limit); the best weights so far are kept
    pseudo_rois: str = ""  # semi-supervised: a ROI store of unlabelled context (train.detect_nuclei output)
    pseudo_weight: float = 0.5  # weight of the pseudo-label loss
    pseudo_threshold: float = 0.7  # teacher class probability needed for a class pseudo-label
    pseudo_batch: int = 8  # unlabelled tiles per step
    teacher_momentum: float = 0.999  # EMA of the mean teacher
    cls_loss: str = "balanced"  # point classifier loss: ce, balanced (inverse class frequency) or focal
    cls_balance_power: float = 0.5  # class weights (n / (C n_c)) ** power for balanced / focal; 0 = unweighted
    stain: float = 0.2  # HED stain jitter sigma (see train.data.robust); 0 = off
    blur_p: float = 0.5  # probability of a Gaussian blur (sigma 0.3 to 1.2 px) per view
    jpeg_p: float = 0.5  # probability of JPEG artefacts (quality 30 to 90) per view
    scale_jitter: float = 0.2  # views at a random scale in [1 - x, 1 + x] around the model mpp
    backbone_lr_scale: float = 1.0  # the backbone's lr as a fraction of the schedule's (e.g. 0.1 for a pretrained init)
    variety: float = 0.0  # probability of pale, stretched and packed nuclei per view (train.data.variety); 0 = off
    variety_kinds: str = "pale,stretch,packed"  # which of them --variety draws (the others never)
    ignore_unlabelled: str = ""  # "hema", "shipped" or both: likely unlabelled nuclei left out of the negatives
    ignore_distance_um: float = 6.0  # ... when farther than this from every label (train.data.label_gaps)
    self_train_rois: str = ""  # a ROI store of unlabelled tissue, labelled by the shipped weights (self-training)
    self_train_share: float = 0.25  # of the views drawn from it
    ema_momentum: float = 0.99  # keep an EMA of the weights and select and save it; 0 = raw weights
    calibrate_thresholds: str = "0.3,0.35,0.4,0.45,0.5"  # detection thresholds tried on val for OUT/final.pt; "" = off
    calibrate_taus: str = "0"  # logit-adjustment strengths tried with them (see train.calibrate)
    overwrite: bool = False  # replace the weights of an earlier run in OUT (else such an OUT is refused)


RUN_OUTPUTS = ("weights.pt", "weights_raw.pt", "final.pt", "best.json")  # never left over from another run
UNLABELLED = -1  # class id that carries a likely unlabelled nucleus through a view's crop and geometry


def make_batch(
    samples: list[LabelledImage],
    cfg: FinetuneConfig,
    rng: np.random.Generator,
    gen: torch.Generator,
    extra: list[LabelledImage] | None = None,
):
    """A random batch: images [B,3,S,S] (0..255), heat/offset/mask targets, padded GT points and labels, and the
    cells left out of the centre loss's negatives (around a sample's ``unlabelled`` points; none without them).

    Unlabelled points go through the same crop and geometry as the labels (the same draws); under ``variety`` they are
    also paled and copied like labelled nuclei (their copies are ignored too), so those views differ. With ``extra``
    (self-labelled images), each view is drawn from it with probability ``cfg.self_train_share``."""
    size = cfg.tile_size
    images, heats, offsets, masks, points, labels, ignores = [], [], [], [], [], [], []
    variety = VarietyConfig.of_kinds(cfg.variety, cfg.variety_kinds)
    picks = [samples[int(i)] for i in rng.integers(0, len(samples), cfg.batch_size)]
    if extra:  # else no draw: the views of before the option
        picks = [extra[int(rng.integers(len(extra)))] if rng.random() < cfg.self_train_share else s for s in picks]
    for s in picks:
        all_xy, all_labels = s.xy, s.labels
        if s.unlabelled is not None and len(s.unlabelled):  # carried through the same crop and geometry
            all_xy = np.concatenate([s.xy, s.unlabelled]).astype(np.float32)
            all_labels = np.concatenate([s.labels, np.full(len(s.unlabelled), UNLABELLED, s.labels.dtype)])
        if variety.active:  # else the views of before the option, draw for draw
            crop, xy, view_labels = variety_view(s.image, all_xy, all_labels, size, rng, variety, cfg.scale_jitter)
        else:
            crop, xy, keep = random_scaled_crop(s.image, all_xy, size, rng, cfg.scale_jitter)
            xy, view_labels = xy[keep], all_labels[keep]
        crop, xy = random_geometry(crop, xy, rng)
        known = view_labels != UNLABELLED
        xy, view_labels, unknown_xy = xy[known], view_labels[known], xy[~known]
        heat, offset, mask = centre_targets(xy, size)
        images.append(crop)
        heats.append(heat)
        offsets.append(offset)
        masks.append(mask)
        points.append(xy)
        labels.append(view_labels)
        ignores.append(ignore_mask(unknown_xy, size))
    n = max(1, max(len(p) for p in points))
    xy_pad = np.zeros((len(points), n, 2), np.float32)
    lab_pad = np.full((len(points), n), -100, np.int64)  # ignore_index for padding
    for i, (p, lab) in enumerate(zip(points, labels)):
        xy_pad[i, : len(p)], lab_pad[i, : len(lab)] = p, lab
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    x = colour_jitter(hed_jitter(x, gen, cfg.stain), gen)
    x = random_jpeg(random_blur(x, gen, cfg.blur_p), rng, cfg.jpeg_p)
    return (
        x,
        torch.from_numpy(np.stack(heats)),
        torch.from_numpy(np.stack(offsets)),
        torch.from_numpy(np.stack(masks)),
        torch.from_numpy(xy_pad),
        torch.from_numpy(lab_pad),
        torch.from_numpy(np.stack(ignores)),
    )


def parameter_groups(model: torch.nn.Module, cfg: FinetuneConfig) -> list[dict]:
    """AdamW groups: weight decay on matrices and kernels only; ``backbone.*`` at ``cfg.backbone_lr_scale`` times the
    scheduled lr (one group per decay kind when the scale is 1, as before the option existed)."""

    def decays(name: str, p: torch.Tensor) -> bool:
        return p.ndim > 1 and "pos_embed" not in name and "cls_token" not in name

    parts = (False, True) if cfg.backbone_lr_scale != 1 else (None,)  # in the backbone or not; None: no split
    groups = []
    for in_backbone in parts:
        for decay in (True, False):
            params = [
                p
                for n, p in model.named_parameters()
                if decays(n, p) == decay and in_backbone in (None, n.startswith("backbone."))
            ]
            scale = cfg.backbone_lr_scale if in_backbone else 1.0
            groups.append({"params": params, "weight_decay": cfg.weight_decay if decay else 0.0, "lr_scale": scale})
    return groups


def lr_schedule(cfg: FinetuneConfig) -> np.ndarray:
    """Per-step learning rate: linear warmup then cosine to ``min_lr`` (an array indexed by step)."""
    steps = np.arange(cfg.steps)
    warm = cfg.lr * (steps + 1) / max(cfg.warmup_steps, 1)
    progress = np.clip((steps - cfg.warmup_steps) / max(cfg.steps - cfg.warmup_steps - 1, 1), 0, 1)
    cosine = cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + np.cos(math.pi * progress))
    return np.where(steps < cfg.warmup_steps, warm, cosine)


def training_loss(model, batch, cfg: FinetuneConfig, weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Centre focal + offset L1 + point-classifier loss (``cfg.cls_loss``, class ``weights``) on one batch."""
    x, heat, offset, mask, xy, labels, ignore = batch
    out = model(x)
    focal = centre_focal_loss(out.centre[:, 0], heat, ignore=ignore)  # an all-False mask ignores nothing
    pos = mask[:, None].expand_as(offset)
    off = (
        F.l1_loss(out.centre[:, 1:3][pos], offset[pos], reduction="sum") / mask.sum().clamp(min=1)
        if mask.any()
        else out.centre.sum() * 0
    )
    feats = gather_points(out.fmap, xy, x.shape[-2:])
    logits = model.classifier(feats)
    cls = point_class_loss(logits, labels, cfg.cls_loss, weights)
    loss = focal + cfg.offset_weight * off + cfg.cls_weight * cls
    return loss, {"focal": focal.item(), "offset": off.item(), "cls": cls.item()}


def build_model(cfg: FinetuneConfig):
    """``cfg.model``, fresh or initialised from ``cfg.init``.

    ``init`` may be an official-layout backbone ``.pth`` or our weights file. Weights of another registered model
    load into ``cfg.model`` when the only differences are keys of a conv stem (``backbone.stem.*``) that the source
    lacks: the stem then starts from its own (zero-output) initialisation.
    """
    model = create_model(cfg.model, len(CLASSES), cfg.tile_size)
    if cfg.init.endswith(".pth"):
        model.backbone.load_state_dict(load_official_checkpoint(cfg.init, cfg.model, cfg.tile_size).state_dict())
        return model
    if cfg.init:
        source, _ = load_weights(cfg.init)
        state = source.state_dict()
        own = model.state_dict()
        state.update({k: v for k, v in own.items() if k.startswith("backbone.stem.") and k not in state})
        problem = state_dict_mismatch(own, state)
        if problem:
            raise ConfigError(f"--init {cfg.init} does not fit model '{cfg.model}': {problem}")
        model.load_state_dict(state)
    return model


def finetune(cfg: FinetuneConfig, train_set=None, val_set=None) -> dict:
    """Train and write weights; returns the best validation scores."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng, gen = np.random.default_rng(cfg.seed), torch.Generator().manual_seed(cfg.seed)
    if cfg.cls_loss not in CLS_LOSSES:
        raise ConfigError(f"unknown cls_loss '{cfg.cls_loss}'; choose one of: {', '.join(CLS_LOSSES)}")
    thresholds, taus = calibration_grid(
        cfg.calibrate_thresholds, cfg.calibrate_taus, ("--calibrate-thresholds", "--calibrate-taus")
    )  # checked before hours of training, not after
    check_amp(cfg.amp, cfg.device)
    if cfg.steps < 1:
        raise ConfigError(f"--steps must be 1 or more, got {cfg.steps}")
    VarietyConfig.of_kinds(cfg.variety, cfg.variety_kinds)  # a misspelt kind is refused before training
    ignore_sources = parse_sources(cfg.ignore_unlabelled)
    if not cfg.ignore_distance_um > 0:
        raise ConfigError(f"--ignore-distance-um must be above 0, got {cfg.ignore_distance_um}")
    if not 0 < cfg.self_train_share <= 1:
        raise ConfigError(f"--self-train-share must be in (0, 1], got {cfg.self_train_share}")
    self_store = RoiStore(Path(cfg.self_train_rois)) if cfg.self_train_rois else None  # a bad path fails here
    if not cfg.backbone_lr_scale > 0:
        raise ConfigError(f"--backbone-lr-scale must be above 0, got {cfg.backbone_lr_scale}; 1 trains it as the rest")
    out = Path(cfg.out)
    earlier = [name for name in RUN_OUTPUTS if (out / name).exists()]
    if earlier and not cfg.overwrite:
        raise ConfigError(
            f"--out {out} already holds a run ({', '.join(earlier)}); pass another --out, or --overwrite true to "
            "replace it"
        )
    for name in earlier:
        (out / name).unlink()
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.json")
    train_set = train_set if train_set is not None else load_split("train")
    val_set = val_set if val_set is not None else load_split("val")
    if ignore_sources:
        train_set = with_unlabelled_nuclei(train_set, ignore_sources, cfg.ignore_distance_um)
    extra = self_labelled_images(self_store, cfg.self_train_rois) if self_store is not None else None
    labels = np.concatenate([s.labels for s in train_set])
    weights = class_weights(labels, len(CLASSES), cfg.cls_balance_power).to(cfg.device)
    device = torch.device(cfg.device)
    model = build_model(cfg).to(device).train()
    opt = torch.optim.AdamW(parameter_groups(model, cfg), lr=cfg.lr)
    lrs = lr_schedule(cfg)
    pseudo_store = RoiStore(Path(cfg.pseudo_rois)) if cfg.pseudo_rois else None
    teacher = copy.deepcopy(model).eval() if pseudo_store is not None else None
    averaged = copy.deepcopy(model).eval() if cfg.ema_momentum > 0 else None
    meta = WeightsMeta(
        cfg.model, CLASSES, BRCA_MPP, cfg.tile_size, {**asdict(cfg), "provenance": finetune_provenance(cfg)}
    )
    # (name in the log, model, file): "val" is the model that is selected and shipped
    candidates = [("val", model, "weights.pt")]
    if averaged is not None:
        candidates = [("val", averaged, "weights.pt"), ("val_raw", model, "weights_raw.pt")]
    bests = {name: {"macro_f1": -1.0} for name, _, _ in candidates}
    start = time.time()
    with open(out / "log.jsonl", "w") as log:
        for step in range(cfg.steps):
            for group in opt.param_groups:
                group["lr"] = float(lrs[step]) * group["lr_scale"]
            batch = [t.to(device) for t in make_batch(train_set, cfg, rng, gen, extra)]
            with autocast(cfg.amp, device):
                loss, parts = training_loss(model, batch, cfg, weights)
            if pseudo_store is not None:
                unlabelled = unlabelled_batch(pseudo_store, cfg.tile_size, BRCA_MPP, cfg.pseudo_batch, rng).to(device)
                pseudo, pseudo_parts = pseudo_label_loss(model, teacher, unlabelled, cfg.pseudo_threshold)
                loss = loss + cfg.pseudo_weight * pseudo
                parts.update(pseudo_parts)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 3.0)
            opt.step()
            if teacher is not None:
                ema_update(teacher, model, cfg.teacher_momentum)
            if averaged is not None:
                ema_update(averaged, model, warmed_momentum(cfg.ema_momentum, step), average_buffers=True)
            minutes = (time.time() - start) / 60
            last = step == cfg.steps - 1 or (cfg.max_minutes and minutes > cfg.max_minutes)
            record = {"step": step, "loss": loss.item(), **parts, "lr": float(lrs[step]), "minutes": round(minutes, 2)}
            if (step + 1) % cfg.eval_every == 0 or last:
                for name, candidate, filename in candidates:
                    candidate.eval()
                    scores = evaluate_images(candidate, val_set, EvalConfig(), matcher="mcspatnet", device=cfg.device)
                    record[name] = scores
                    if scores["macro_f1"] > bests[name]["macro_f1"]:
                        bests[name] = {**scores, "step": step}
                        save_weights(out / filename, candidate, meta, half=cfg.half)
                model.train()
            log.write(json.dumps(record) + "\n")
            log.flush()
            if step % 10 == 0 or "val" in record:
                print(json.dumps(record), file=sys.stderr, flush=True)
            if last:
                break
    best = bests["val"] if averaged is None else {**bests["val"], "raw": bests["val_raw"]}
    if thresholds:
        best["calibrated"] = calibrate_best(out, taus, thresholds, cfg.half, train_set, val_set)
    (out / "best.json").write_text(json.dumps(best, indent=2) + "\n")
    return best


def with_unlabelled_nuclei(samples: list[LabelledImage], sources: tuple[str, ...], distance_um: float):
    """``samples`` with their likely unlabelled nuclei found (:mod:`train.data.label_gaps`); prints the count."""
    detector = shipped_detector(BRCA_MPP) if "shipped" in sources else None
    out = [
        replace(s, unlabelled=unlabelled_nuclei(s.image, s.xy, BRCA_MPP, sources, distance_um, detector))
        for s in samples
    ]
    found = sum(len(s.unlabelled) for s in out)
    labelled = sum(len(s.xy) for s in out)
    print(
        f"--ignore-unlabelled {','.join(sources)}: {found} likely nuclei over {distance_um} um from every one of "
        f"{labelled} labels, left out of the centre loss's negatives",
        file=sys.stderr,
    )
    return out


def self_labelled_images(store: RoiStore, name: str) -> list[LabelledImage]:
    """The store's images labelled by the shipped weights (:mod:`train.data.self_labels`); prints the counts."""
    out = self_labelled(store)
    print(
        f"--self-train-rois {name}: {len(out)} images, {sum(len(s.xy) for s in out)} nuclei taught "
        f"({sum(int((s.labels >= 0).sum()) for s in out)} with a class), "
        f"{sum(len(s.unlabelled) for s in out)} uncertain ones left out of the negatives",
        file=sys.stderr,
    )
    return out


def calibrate_best(out: Path, taus, thresholds, half: bool, train_set, val_set) -> dict:
    """Calibrate ``OUT/weights.pt`` on val (train.calibrate) and write ``OUT/final.pt``; returns the chosen row."""
    model, meta = load_weights(out / "weights.pt")
    meta, chosen = calibrate_weights(model, meta, taus, thresholds, train_set, val_set)
    save_weights(out / "final.pt", model, meta, half=half)
    return {k: chosen[k] for k in ("tau", "threshold", "det_f1", "macro_f1")}


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(FinetuneConfig, argv, __doc__.splitlines()[0])
    best = finetune(cfg)
    print(json.dumps(best, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
