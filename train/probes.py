"""The official MUSE probes at ground-truth points (method.md 6.3): kNN, linear probe, fine-tune.

Features are the backbone's dense map sampled (official bilinear convention) at every labelled nucleus, each read
from the 224-px tile that owns it. kNN: cosine similarity, votes weighted by ``exp(sim / 0.07)``, k in
{10, 20, 100, 200, 500}, best top-1 over k. Linear: ``Linear(D, C)`` from N(0, 0.01), SGD momentum 0.9, lr 0.01,
batch 256, cosine over 100 epochs, test accuracy at the best validation epoch (ties: the later one). Fine-tune: the
backbone and the best linear head together, AdamW lr 1e-5, batch of 32 images' nuclei, cosine, best validation epoch.

Top-1 accuracy follows the class mix of the scored split (BRCA-M2C test is 69% tumour, so always answering "tumour"
scores 69.0%). Every probe therefore also reports class-balanced accuracy (mean per-class recall) and macro F1
(:func:`class_scores`), which the class prior cannot flatter.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from muse_fast.io.tiling import tile_grid
from muse_fast.kernels.point_gather import gather_points
from muse_fast.model.backbone import MuseBackbone
from muse_fast.model.registry import imagenet_normalise
from muse_fast.runtime.predict import crop_tile

from .data.brca import LabelledImage

KNN_KS = (10, 20, 100, 200, 500)
KNN_T = 0.07


@dataclass
class PointSet:
    feats: torch.Tensor  # [N, D]
    labels: torch.Tensor  # [N]


def tile_batches(images: list[LabelledImage], tile: int = 224, overlap: int = 32):
    """(tile pixels uint8 [T,T,3], points in tile pixels [M,2], labels [M]) for every tile owning labelled nuclei."""
    for im in images:
        h, w = im.image.shape[:2]
        for t in tile_grid(w, h, tile, overlap):
            own = t.owns(im.xy)
            if own.any():
                yield crop_tile(im.image, t, tile), im.xy[own] - (t.x, t.y), im.labels[own]


def point_features(
    backbone: MuseBackbone,
    images: list[LabelledImage],
    batch: int = 16,
    device: str = "cpu",
    grad: bool = False,
    tile: int = 224,
    overlap: int = 32,
) -> PointSet:
    """Features at every GT nucleus (no gradients unless ``grad``)."""
    feats, labels = [], []
    items = list(tile_batches(images, tile, overlap))
    for i in range(0, len(items), batch):
        chunk = items[i : i + batch]
        x = torch.from_numpy(np.stack([c[0] for c in chunk])).permute(0, 3, 1, 2).float().to(device)
        m = max(len(c[1]) for c in chunk)
        xy = torch.zeros(len(chunk), m, 2)
        for j, c in enumerate(chunk):
            xy[j, : len(c[1])] = torch.from_numpy(c[1].astype(np.float32))
        counts = torch.tensor([len(c[1]) for c in chunk], dtype=torch.int32)
        with torch.set_grad_enabled(grad):
            fmap = backbone(imagenet_normalise(x)).fmap
            f = gather_points(fmap, xy.to(device), x.shape[-2:], counts)
        valid = torch.arange(m)[None, :] < counts[:, None]
        feats.append(f[valid.to(device)])
        labels.append(torch.from_numpy(np.concatenate([c[2] for c in chunk])))
    return PointSet(torch.cat(feats), torch.cat(labels))


def class_scores(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict:
    """Top-1 accuracy, class-balanced accuracy (mean recall over the classes present) and macro F1 (all classes)."""
    pred, labels = pred.long().cpu(), labels.long().cpu()
    conf = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    conf.index_put_((labels, pred), torch.ones(len(labels), dtype=torch.float64), accumulate=True)
    tp, support, predicted = conf.diag(), conf.sum(1), conf.sum(0)
    present = support > 0
    recall = tp[present] / support[present]
    f1 = torch.where(support + predicted > 0, 2 * tp / (support + predicted).clamp(min=1), torch.zeros_like(tp))
    return {
        "top1": float(tp.sum() / max(len(labels), 1)),
        "balanced": float(recall.mean()) if bool(present.any()) else 0.0,
        "macro_f1": float(f1.mean()),
    }


def prior_scores(train: PointSet, test: PointSet, num_classes: int) -> dict:
    """The scores of always answering the gallery's majority class: the floor any probe must clear."""
    majority = int(torch.bincount(train.labels, minlength=num_classes).argmax())
    return class_scores(torch.full_like(test.labels, majority), test.labels, num_classes)


@torch.no_grad()
def knn_accuracy(train: PointSet, test: PointSet, num_classes: int, ks=KNN_KS, temperature: float = KNN_T) -> dict:
    """Weighted kNN (DINO's rule) per k: top-1 (``per_k``), balanced accuracy and macro F1; the best of each over k.

    ``best`` is the official best-over-k top-1; ``best_balanced`` and ``best_macro_f1`` are chosen over k
    separately, so none of the three is flattered by the k that another one prefers.
    """
    gallery = F.normalize(train.feats.float(), dim=1)
    queries = F.normalize(test.feats.float(), dim=1)
    kmax = min(max(ks), len(gallery))
    preds: dict[int, list[torch.Tensor]] = {k: [] for k in ks}
    for i in range(0, len(queries), 1024):
        sim, idx = (queries[i : i + 1024] @ gallery.T).topk(kmax, dim=1)
        neighbours = train.labels[idx]
        weights = (sim / temperature).exp()
        for k in ks:
            kk = min(k, kmax)
            votes = torch.zeros(len(sim), num_classes).scatter_add_(1, neighbours[:, :kk], weights[:, :kk])
            preds[k].append(votes.argmax(1))
    scores = {k: class_scores(torch.cat(p), test.labels, num_classes) for k, p in preds.items()}
    per_k = {k: s["top1"] for k, s in scores.items()}
    balanced = {k: s["balanced"] for k, s in scores.items()}
    macro = {k: s["macro_f1"] for k, s in scores.items()}
    return {
        "per_k": per_k,
        "best": max(per_k.values()),
        "balanced": balanced,
        "macro_f1": macro,
        "best_balanced": max(balanced.values()),
        "best_macro_f1": max(macro.values()),
    }


def _accuracy(head: nn.Module, data: PointSet) -> float:
    with torch.no_grad():
        return float((head(data.feats.float()).argmax(1) == data.labels).float().mean())


def linear_probe(
    train: PointSet, val: PointSet, test: PointSet, num_classes: int, epochs: int = 100, seed: int = 2025
) -> tuple[float, nn.Linear]:
    """Test accuracy at the best validation epoch (later epoch on ties), and that epoch's head."""
    g = torch.Generator().manual_seed(seed)
    head = nn.Linear(train.feats.shape[1], num_classes)
    nn.init.normal_(head.weight, 0, 0.01, generator=g)
    nn.init.zeros_(head.bias)
    opt = torch.optim.SGD(head.parameters(), lr=0.01, momentum=0.9, weight_decay=0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    best_val, best_test, best_head = -1.0, 0.0, copy.deepcopy(head)
    feats = train.feats.float()
    for _ in range(epochs):
        for batch in torch.randperm(len(feats), generator=g).split(256):
            loss = F.cross_entropy(head(feats[batch]), train.labels[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        v = _accuracy(head, val)
        if v >= best_val:
            best_val, best_test, best_head = v, _accuracy(head, test), copy.deepcopy(head)
    return best_test, best_head


def finetune_probe(
    backbone: MuseBackbone,
    head: nn.Linear,
    train: list[LabelledImage],
    val: list[LabelledImage],
    test: list[LabelledImage],
    num_classes: int,
    epochs: int = 10,
    lr: float = 1e-5,
    images_per_batch: int = 32,
    seed: int = 2025,
) -> float:
    """Backbone + linear head trained together on GT nuclei; test accuracy at the best validation epoch."""
    backbone, head = copy.deepcopy(backbone).train(), copy.deepcopy(head)
    params = list(backbone.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    steps = epochs * max(1, -(-len(train) // images_per_batch))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    rng = np.random.default_rng(seed)

    def evaluate(images):
        backbone.eval()
        points = point_features(backbone, images)
        backbone.train()
        return _accuracy(head, points)

    best_val, best_test = -1.0, 0.0
    for _ in range(epochs):
        order = rng.permutation(len(train))
        for i in range(0, len(order), images_per_batch):
            points = point_features(backbone, [train[j] for j in order[i : i + images_per_batch]], grad=True)
            loss = F.cross_entropy(head(points.feats), points.labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        v = evaluate(val)
        if v >= best_val:
            best_val, best_test = v, evaluate(test)
    return best_test
