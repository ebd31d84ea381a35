"""Evaluate weights on a BRCA-M2C split: detection P/R/F1, per-class F1, macro F1, accuracy at GT points.

    python -m train.evaluate [--weights W] [--split test] [--json out.json]

Predictions come from the same tiled path as ``muse-fast infer``. Two matchers are reported (see
:mod:`train.metrics`): the BRCA-M2C paper's protocol (MCSpatNet: strictly below 6 px at 20x, greedy in raster order
per class) and one-to-one Hungarian matching within 3 um. Classification accuracy classifies the point feature at
every ground-truth nucleus.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kernels.point_gather import gather_points
from muse_fast.io.tiling import tile_grid
from muse_fast.model.weights import load_weights
from muse_fast.post.decode import DecodeConfig
from muse_fast.runtime.engines import TorchEngine
from muse_fast.runtime.predict import crop_tile, predict_image

from .data.brca import BRCA_MPP, CLASSES, LabelledImage, load_split
from .metrics import score_detections

MCSPATNET_RADIUS_PX = 6.0  # "distance strictly below 6 px at 20x"
HUNGARIAN_RADIUS_UM = 3.0


@dataclass(frozen=True)
class EvalConfig:
    tile_size: int = 224
    overlap: int = 32
    batch_size: int = 16
    decode: DecodeConfig = DecodeConfig()


@torch.no_grad()
def accuracy_at_points(engine: TorchEngine, image: LabelledImage, cfg: EvalConfig) -> tuple[int, int]:
    """Classify the feature at every GT point (each point read from the tile that owns it); (correct, total)."""
    h, w = image.image.shape[:2]
    correct = 0
    for tile in tile_grid(w, h, cfg.tile_size, cfg.overlap):
        own = tile.owns(image.xy)
        if not own.any():
            continue
        dense = engine.run(crop_tile(image.image, tile, cfg.tile_size)[None])
        xy = torch.from_numpy(image.xy[own] - (tile.x, tile.y)).float()[None].to(engine.device)
        pred = engine.classify(gather_points(dense.fmap, xy, (cfg.tile_size, cfg.tile_size))).argmax(-1)[0]
        correct += int((pred.cpu().numpy() == image.labels[own]).sum())
    return correct, len(image.labels)


def evaluate_images(
    model,
    images: list[LabelledImage],
    cfg: EvalConfig,
    matcher: str | None = None,
    device: str = "cpu",
    with_accuracy: bool = False,
) -> dict:
    """Scores of ``model`` on labelled images; one matcher's flat dict, or all of them nested when ``matcher=None``."""
    engine = TorchEngine(model, device)
    per_image = []
    correct = total = 0
    for im in images:
        nuc = predict_image(engine, im.image, cfg.tile_size, cfg.overlap, cfg.decode, cfg.batch_size)
        per_image.append((im.xy.astype(np.float64), im.labels, nuc.xy, nuc.class_id))
        if with_accuracy:
            c, t = accuracy_at_points(engine, im, cfg)
            correct, total = correct + c, total + t
    radii = {"mcspatnet": MCSPATNET_RADIUS_PX, "hungarian": HUNGARIAN_RADIUS_UM / BRCA_MPP}
    if matcher is not None:
        return score_detections(per_image, len(CLASSES), radii[matcher], matcher).as_dict()
    out = {m: score_detections(per_image, len(CLASSES), r, m).as_dict() for m, r in radii.items()}
    if with_accuracy:
        out["accuracy_at_gt"] = correct / max(total, 1)
        out["n_gt"] = total
    return out


def format_table(scores: dict) -> str:
    names = ["det_precision", "det_recall", "det_f1", *[f"f1_class{i}" for i in range(len(CLASSES))], "macro_f1"]
    header = "| matcher | det P | det R | det F1 | " + " | ".join(f"F1 {c}" for c in CLASSES) + " | macro F1 |"
    lines = [header, "|" + "---|" * (len(names) + 1)]
    for m in ("mcspatnet", "hungarian"):
        lines.append(f"| {m} | " + " | ".join(f"{scores[m][n]:.3f}" for n in names) + " |")
    if "accuracy_at_gt" in scores:
        lines.append(f"\nclassification accuracy at {scores['n_gt']} GT points: {scores['accuracy_at_gt']:.4f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=None, help="weights file (default: the shipped model)")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--threshold", type=float, default=DecodeConfig.threshold)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None, help="also write the scores here")
    args = parser.parse_args(argv)
    model, meta = load_weights(args.weights)
    cfg = EvalConfig(tile_size=meta.tile_size, decode=DecodeConfig(threshold=args.threshold))
    scores = evaluate_images(model, load_split(args.split), cfg, device=args.device, with_accuracy=True)
    print(format_table(scores))
    if args.json:
        args.json.write_text(json.dumps(scores, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
