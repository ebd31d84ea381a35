"""Evaluate weights on a BRCA-M2C split: detection P/R/F1, per-class F1, macro F1, accuracy at GT points.

    python -m train.evaluate [--weights W] [--split test] [--json out.json]
    python -m train.evaluate --data nucls            # NuCLS subset at 0.25 um/px: det P/R/F1, recall per class
    python -m train.evaluate --split val --stress-suite   # recall under pale, elongated, crowded, frozen nuclei

Predictions come from the same tiled path as ``muse-fast infer``. Two matchers are reported (see
:mod:`train.metrics`): the BRCA-M2C paper's protocol (MCSpatNet: strictly below 6 px at 20x, greedy in raster order
per class) and one-to-one Hungarian matching within 3 um. Classification accuracy classifies the point feature at
every ground-truth nucleus.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from muse_fast.errors import ConfigError
from muse_fast.model.weights import load_weights
from muse_fast.post.decode import DecodeConfig
from muse_fast.runtime.engines import TorchEngine
from muse_fast.runtime.predict import predict_image
from muse_fast.runtime.tta import FlipTTAEngine

from .config import one_line_errors
from .data.brca import BRCA_MPP, CLASSES, LabelledImage, load_split
from .data.hema_nuclei import detect_haematoxylin_nuclei
from .data.nucls import NUCLS_CLASSES, NUCLS_MPP, load_nucls
from .metrics import score_detections
from .perturb import Perturbation, parse_perturbation, perturb_image, stress_labelled, to_original_pixels
from .recall import detection_report, format_report_table

MCSPATNET_RADIUS_PX = 6.0  # "distance strictly below 6 px at 20x"
HUNGARIAN_RADIUS_UM = 3.0
# the stress tests of --stress-suite (see train.perturb); "clean" is the unchanged split
STRESS_SUITE = {
    "clean": "",
    "pale 0.5": "pale=0.5",
    "pale 0.8": "pale=0.8",
    "elongated 1.6": "stretch=1.6",
    "elongated 1.6 + shear 0.4": "stretch=1.6,shear=0.4",
    "crowded 0.5": "crowd=0.5",
    "crowded 1.0": "crowd=1.0",
    "frozen 1.0": "frozen=1.0",
}


@dataclass(frozen=True)
class EvalConfig:
    tile_size: int = 224
    overlap: int = 32
    batch_size: int = 16
    decode: DecodeConfig = DecodeConfig()


@torch.no_grad()
def scores_at_points(model, images: list[LabelledImage], cfg: EvalConfig, device: str = "cpu") -> dict:
    """Classify the point feature at every GT nucleus (read from the tile that owns it).

    Returns top-1, class-balanced accuracy and macro F1 (:func:`train.probes.class_scores`) and the point count.
    """
    from .probes import class_scores, point_features

    backbone = model.backbone.to(device).eval()
    points = point_features(backbone, images, cfg.batch_size, device, tile=cfg.tile_size, overlap=cfg.overlap)
    pred = model.classifier.to(device)(points.feats.float()).argmax(-1).cpu()
    return {**class_scores(pred, points.labels, len(CLASSES)), "n": len(points.labels)}


def evaluate_images(
    model,
    images: list[LabelledImage],
    cfg: EvalConfig,
    matcher: str | None = None,
    device: str = "cpu",
    with_accuracy: bool = False,
    perturb: Perturbation = Perturbation(),
    tta: bool = False,
    engine=None,
    precision: str = "fp32",
) -> dict:
    """Scores of ``model`` on labelled images; one matcher's flat dict, or all of them nested when ``matcher=None``.

    ``perturb`` alters each image first (:mod:`train.perturb`); predictions are matched in the original pixels.
    ``tta`` averages the plain pass with horizontal and vertical flips (:class:`muse_fast.runtime.tta.FlipTTAEngine`).
    ``engine`` replaces the model's torch engine (e.g. :class:`train.calibrate.CachedEngine`); ``precision`` is the
    torch engine's (fp32, the reference, by default; see :mod:`muse_fast.runtime.precision`).
    """
    engine = engine or TorchEngine(model, device, precision)
    engine = FlipTTAEngine(engine) if tta else engine
    per_image = predict_labelled(engine_detector(engine, cfg), images, perturb)
    radii = {"mcspatnet": MCSPATNET_RADIUS_PX, "hungarian": HUNGARIAN_RADIUS_UM / BRCA_MPP}
    if matcher is not None:
        return score_detections(per_image, len(CLASSES), radii[matcher], matcher).as_dict()
    out = {m: score_detections(per_image, len(CLASSES), r, m).as_dict() for m, r in radii.items()}
    if with_accuracy:
        at_gt = scores_at_points(model, images, cfg, device)
        out["accuracy_at_gt"] = at_gt["top1"]
        out["balanced_accuracy_at_gt"] = at_gt["balanced"]
        out["macro_f1_at_gt"] = at_gt["macro_f1"]
        out["n_gt"] = at_gt["n"]
    return out


def engine_detector(engine, cfg: EvalConfig) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``image -> (xy, class_id)`` through muse-fast's tiled path with ``engine``."""

    def detect(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        nuc = predict_image(engine, image, cfg.tile_size, cfg.overlap, cfg.decode, cfg.batch_size)
        return nuc.xy, nuc.class_id

    return detect


def haematoxylin_detector(mpp: float, kind: str = "hema") -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``image -> (xy, class 0)`` of a label-free detector at ``mpp``: ``hema`` (:mod:`train.data.hema_nuclei`) or
    ``blob`` (:func:`train.detect_nuclei.blob_detector`, Laplacian of Gaussian)."""
    from .detect_nuclei import blob_detector

    find = detect_haematoxylin_nuclei if kind == "hema" else blob_detector

    def detect(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xy = find(image, mpp)
        return xy, np.zeros(len(xy), np.int64)

    return detect


def predict_labelled(
    detect: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    images: list[LabelledImage],
    perturb: Perturbation,
    image_mpp: float = BRCA_MPP,
    model_mpp: float = BRCA_MPP,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """``(gt_xy, gt_cls, pred_xy, pred_cls)`` per image, in its own (stressed) pixels, from ``detect``.

    Stress tests change the image and its labels first; images at ``image_mpp`` are resized to the model's
    ``model_mpp`` (with any ``scale`` perturbation) and predictions mapped back before matching.
    """
    ratio = image_mpp / model_mpp
    resize = replace(perturb, scale=perturb.scale * ratio) if abs(ratio - 1) > 1e-9 else perturb
    out = []
    for index, im in enumerate(images):
        im = stress_labelled(im, perturb, index, image_mpp)
        image = perturb_image(im.image, resize, index) if resize.active else im.image
        xy, class_id = detect(image)
        out.append((im.xy.astype(np.float64), im.labels, to_original_pixels(xy, resize), class_id))
    return out


def detection_scores(
    detect: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    images: list[LabelledImage],
    class_names: tuple[str, ...],
    image_mpp: float,
    model_mpp: float,
    perturb: Perturbation = Perturbation(),
) -> dict:
    """Class-agnostic det P/R/F1 within 3 um, one-to-one, with recall per labelled class and per spacing."""
    per_image = predict_labelled(detect, images, perturb, image_mpp, model_mpp)
    return detection_report([(g, c, p) for g, c, p, _ in per_image], image_mpp, class_names, HUNGARIAN_RADIUS_UM)


def stress_suite(
    detect: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    images: list[LabelledImage],
    image_mpp: float,
    model_mpp: float,
    suite: dict[str, str] = STRESS_SUITE,
) -> dict[str, dict]:
    """:func:`detection_scores` under each stress test of ``suite`` (name -> ``--perturb`` text)."""
    rows = {}
    for name, text in suite.items():
        rows[name] = detection_scores(detect, images, CLASSES, image_mpp, model_mpp, parse_perturbation(text))
        print(f"{name}: det R {rows[name]['det_recall']:.3f}, det F1 {rows[name]['det_f1']:.3f}", flush=True)
    return rows


def format_table(scores: dict) -> str:
    names = ["det_precision", "det_recall", "det_f1", *[f"f1_class{i}" for i in range(len(CLASSES))], "macro_f1"]
    header = "| matcher | det P | det R | det F1 | " + " | ".join(f"F1 {c}" for c in CLASSES) + " | macro F1 |"
    lines = [header, "|" + "---|" * (len(names) + 1)]
    for m in ("mcspatnet", "hungarian"):
        lines.append(f"| {m} | " + " | ".join(f"{scores[m][n]:.3f}" for n in names) + " |")
    if "accuracy_at_gt" in scores:
        lines.append(
            f"\nclassification at {scores['n_gt']} GT points: accuracy {scores['accuracy_at_gt']:.4f}, "
            f"balanced accuracy {scores['balanced_accuracy_at_gt']:.4f}, macro F1 {scores['macro_f1_at_gt']:.4f}"
        )
    return "\n".join(lines)


def load_probe_backbone(spec: str, model: str):
    """``random`` (seeded init), an official-layout ``.pth`` (e.g. train.pretrain's backbone.pth), or our weights."""
    from muse_fast.model import create_backbone, load_official_checkpoint

    if spec == "random":
        torch.manual_seed(2025)
        return create_backbone(model).eval()
    if spec.endswith(".pth"):
        return load_official_checkpoint(spec, model).eval()
    return load_weights(spec)[0].backbone.eval()


def run_probes(
    backbones: dict[str, str], model: str, probes: list[str], finetune_epochs: int = 10, split: str = "test"
) -> dict:
    """Probe results per backbone: kNN (per k and best), linear, and optionally fine-tune accuracy.

    kNN queries ``split`` (train is the gallery); the linear and fine-tune probes choose their epoch on val and
    score test, so they need ``split == "test"``.
    """
    from .probes import class_scores, finetune_probe, knn_accuracy, linear_probe, point_features, prior_scores

    if split == "train":
        raise ConfigError("train is the kNN gallery; query val or test")
    if split != "test" and set(probes) - {"knn"}:
        raise ConfigError("the linear and fine-tune probes choose their epoch on val and score test; use --split test")
    splits = {s: load_split(s) for s in ("train", "val", "test")}
    results: dict = {}
    for name, spec in backbones.items():
        backbone = load_probe_backbone(spec, model)
        points = {s: point_features(backbone, images) for s, images in splits.items()}
        res: dict = {}
        if "knn" in probes:
            res["knn"] = knn_accuracy(points["train"], points[split], len(CLASSES))
        if not results:  # the class prior: always the gallery's majority class
            results["majority class"] = {"prior": prior_scores(points["train"], points[split], len(CLASSES))}
        if "linear" in probes or "finetune" in probes:
            res["linear"], head = linear_probe(points["train"], points["val"], points["test"], len(CLASSES))
            with torch.no_grad():
                test_scores = class_scores(
                    head(points["test"].feats.float()).argmax(1), points["test"].labels, len(CLASSES)
                )
            res["linear_balanced"], res["linear_macro_f1"] = test_scores["balanced"], test_scores["macro_f1"]
        if "finetune" in probes:
            res["finetune"] = finetune_probe(
                backbone, head, splits["train"], splits["val"], splits["test"], len(CLASSES), epochs=finetune_epochs
            )
        results[name] = res
        print(f"{name}: {json.dumps(res)}", flush=True)
    return results


def format_probe_table(results: dict) -> str:
    """Top-1 per k, then the class-balanced columns (balanced accuracy, macro F1) beside every top-1 figure.

    The ``majority class`` row always answers the gallery's majority class: any probe at or below it has learned
    nothing the class prior does not give.
    """
    nan = float("nan")
    cols = ["kNN best", *(f"k={k}" for k in (10, 20, 100, 200, 500)), "kNN bal. acc", "kNN macro F1"]
    cols += ["linear", "linear bal. acc", "linear macro F1", "fine-tune"]
    lines = ["| backbone | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name, r in results.items():
        if "prior" in r:
            p = r["prior"]
            cells = [p["top1"], *[nan] * 5, p["balanced"], p["macro_f1"], p["top1"], p["balanced"], p["macro_f1"], nan]
        else:
            knn = r.get("knn", {"best": nan, "per_k": {}})
            cells = [knn["best"], *(knn["per_k"].get(k, nan) for k in (10, 20, 100, 200, 500))]
            cells += [knn.get("best_balanced", nan), knn.get("best_macro_f1", nan)]
            cells += [r.get("linear", nan), r.get("linear_balanced", nan), r.get("linear_macro_f1", nan)]
            cells.append(r.get("finetune", nan))
        lines.append(f"| {name} | " + " | ".join("" if c != c else f"{100 * c:.2f}" for c in cells) + " |")
    return "\n".join(lines)


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=None, help="weights file (default: the shipped model)")
    parser.add_argument("--probes", default="", help="run probes instead: comma list of knn, linear, finetune")
    parser.add_argument(
        "--backbone",
        action="append",
        default=[],
        help="NAME=SPEC to probe (SPEC: random, a backbone .pth, or a weights file); repeatable",
    )
    parser.add_argument("--model", default="muse_vit_t16", help="architecture of the probed backbones")
    parser.add_argument("--finetune-epochs", type=int, default=10)
    parser.add_argument("--split", default=None, choices=["train", "val", "test"], help="BRCA-M2C: default test")
    parser.add_argument(
        "--data",
        default="brca",
        choices=["brca", "nucls"],
        help="brca (BRCA-M2C, 0.5 um/px) or nucls (the NuCLS subset: every crop, or --split train/test; "
        "detection and recall per NuCLS class only)",
    )
    parser.add_argument(
        "--data-mpp", type=float, default=None, help="the images' um/px (default: 0.5 brca, 0.25 nucls)"
    )
    parser.add_argument(
        "--positions",
        choices=["model", "hema", "blob"],
        default="model",
        help="with --data nucls or --stress-suite: score the weights (model) or a label-free detector "
        "(hema: haematoxylin peaks; blob: LoG)",
    )
    parser.add_argument(
        "--stress-suite", action="store_true", help="recall under each stress test (pale, elongated, crowded, frozen)"
    )
    parser.add_argument("--threshold", type=float, default=DecodeConfig.threshold)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--perturb",
        default="",
        help="robustness: e.g. hed=0.5,scale=0.8,blur=1.0,jpeg=40 (see train.perturb; skips accuracy at GT)",
    )
    parser.add_argument("--tta", action="store_true", help="average with horizontal and vertical flips (3 passes)")
    parser.add_argument("--precision", default="fp32", help="torch engine precision: fp32 (default), bf16, fp16, auto")
    parser.add_argument("--json", type=Path, default=None, help="also write the scores here")
    args = parser.parse_args(argv)
    if args.data_mpp is not None and not args.data_mpp > 0:
        raise ConfigError(f"--data-mpp must be a positive um/px, got {args.data_mpp}")
    if args.probes:
        args.split = args.split or "test"
        specs = dict(b.split("=", 1) for b in args.backbone) or {"random": "random"}
        results = run_probes(specs, args.model, args.probes.split(","), args.finetune_epochs, args.split)
        print(format_probe_table(results))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
        return 0
    model, meta = load_weights(args.weights)
    cfg = EvalConfig(tile_size=meta.tile_size, decode=DecodeConfig(threshold=args.threshold))
    perturb = parse_perturbation(args.perturb)
    if args.data == "nucls" or args.stress_suite or args.positions != "model":
        return _detection_main(args, model, meta, cfg, perturb)
    images = load_split(args.split or "test")
    scores = evaluate_images(
        model,
        images,
        cfg,
        device=args.device,
        with_accuracy=not perturb.active,
        perturb=perturb,
        tta=args.tta,
        precision=args.precision,
    )
    if perturb.active:
        scores["perturb"] = perturb.describe()
        print(f"perturbed: {perturb.describe()} (seed {perturb.seed})")
    print(format_table(scores))
    if args.json:
        args.json.write_text(json.dumps(scores, indent=2) + "\n")
    return 0


def _detection_main(args, model, meta, cfg: EvalConfig, perturb: Perturbation) -> int:
    """``--data nucls`` and ``--stress-suite``: class-agnostic detection and recall tables."""
    if args.data == "nucls":
        if args.split == "val":
            raise ConfigError("the NuCLS subset has no val split; use --split train, --split test or no --split")
        images = [im for im in load_nucls() if args.split is None or im.name.startswith(f"{args.split}_")]
        names, mpp = NUCLS_CLASSES, args.data_mpp or NUCLS_MPP
    else:
        images, names, mpp = load_split(args.split or "test"), CLASSES, args.data_mpp or BRCA_MPP
    if args.positions != "model":
        detect = haematoxylin_detector(meta.mpp, args.positions)
    else:
        engine = TorchEngine(model, args.device, args.precision)
        detect = engine_detector(FlipTTAEngine(engine) if args.tta else engine, cfg)
    if args.stress_suite:
        if args.data != "brca" or perturb.active:
            raise ConfigError(
                "--stress-suite runs on BRCA-M2C without --perturb (it sets its own); drop --data/--perturb"
            )
        rows = stress_suite(detect, images, mpp, meta.mpp)
    else:
        rows = {
            f"{args.data} {args.positions} {perturb.describe() if perturb.active else 'clean'}": detection_scores(
                detect, images, names, mpp, meta.mpp, perturb
            )
        }
    print(
        f"{len(images)} images at {mpp} um/px, model at {meta.mpp} um/px, threshold {cfg.decode.threshold}, "
        "3 um one-to-one"
    )
    print(format_report_table(rows))
    if args.json:
        args.json.write_text(json.dumps({"mpp": mpp, "threshold": cfg.decode.threshold, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
