"""Measurements of ``muse-fast adapt`` on BRCA-M2C and the NuCLS subset (docs/results.md, docs/adapt.md).

    python benchmarks/adapt_measure.py annotate OUT        # QuPath exports for the CLI runs (BRCA-M2C, NuCLS)
    python benchmarks/adapt_measure.py score W.pt DATASET   # detection and class scores of W on the test images
    python benchmarks/adapt_measure.py budget OUT.json      # classes mode: F1 against the number of annotated nuclei

``score`` runs the weights the way ``muse-fast infer`` does (tiled, at the model's mpp, fp32 torch engine) on the
test images (BRCA-M2C: the official test split; NuCLS: the test_* crops), maps the ground truth to the weights'
class names and scores with train.evaluate's matchers. ``budget`` fits the classes-mode classifier (the same code
as the CLI) on random subsets of the train split's annotated nuclei, from one pass of the base network.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "adapt"))

from qupath import points_by_class, rectangle, write_qupath  # noqa: E402

from muse_fast.adapt.classes import ClassesConfig, train_classes  # noqa: E402
from muse_fast.adapt.detect import PointFeatures  # noqa: E402
from muse_fast.model.weights import load_weights  # noqa: E402
from muse_fast.post.decode import DecodeConfig  # noqa: E402
from muse_fast.runtime.engines import TorchEngine  # noqa: E402
from muse_fast.runtime.predict import predict_image  # noqa: E402
from muse_fast.train.data.brca import load_split  # noqa: E402
from muse_fast.train.data.paths import shared_data_dir  # noqa: E402
from muse_fast.train.metrics import hungarian_match, score_detections  # noqa: E402

DATA = shared_data_dir()
BRCA3 = ["1 lymphocyte", "2 tumor", "3 stromal"]  # sorted as BRCA-M2C's ids, so class i is id i
IMMUNE = ["immune", "other"]
NUCLS = ["other_nucleus", "nonTIL_stromal", "sTIL", "tumor_any"]  # the class names written to the exports
NUCLS_IDS = {0: "tumor_any", 1: "nonTIL_stromal", 2: "sTIL", 3: "other_nucleus"}
NUCLS_MPP = 0.25


def nucls(split: str) -> list[tuple[Path, np.ndarray, np.ndarray]]:
    root = DATA / "nucls-subset"
    out = []
    for img in sorted((root / "images").glob(f"{split}_*.png")):
        rows = np.loadtxt(root / "labels" / f"{img.stem}.csv", delimiter=",", ndmin=2)
        out.append((img, rows[:, :2].astype(np.float64), rows[:, 2].astype(np.int64)))
    return out


def annotate(out: Path) -> None:
    """BRCA-M2C: 10% of the train dots (3 classes; 2 classes); 5 train tiles as complete regions. NuCLS: train_*.
    Then :func:`sparse` (drawn after the others, so their files are those of earlier versions)."""
    rng = np.random.default_rng(2025)
    brca = DATA / "brca-m2c" / "images"
    train = load_split("train")
    for name, names, relabel in (("brca3_10pct", BRCA3, None), ("brca2_10pct", IMMUNE, np.array([0, 1, 1]))):
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for im in train:
            keep = rng.random(len(im.labels)) < 0.1
            if keep.sum() == 0:
                continue
            labels = im.labels[keep] if relabel is None else relabel[im.labels[keep]]
            write_qupath(folder / f"{im.name}.geojson", points_by_class(im.xy[keep], labels, names))
        (out / f"{name}.inputs").write_text("\n".join(str(brca / f"{p.stem}.png") for p in sorted(folder.iterdir())))
    folder = out / "brca3_5regions"
    folder.mkdir(parents=True, exist_ok=True)
    picks = rng.choice(len(train), 5, replace=False)
    for i in picks:
        im = train[int(i)]
        h, w = im.image.shape[:2]
        write_qupath(folder / f"{im.name}.geojson", [*points_by_class(im.xy, im.labels, BRCA3), rectangle(0, 0, w, h)])
    (out / "brca3_5regions.inputs").write_text("\n".join(str(brca / f"{train[int(i)].name}.png") for i in picks))
    sparse(out, rng)
    for name, regions in (("nucls_points", False), ("nucls_regions", True)):
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for img, xy, ids in nucls("train"):
            labels = np.array([NUCLS.index(NUCLS_IDS[int(i)]) for i in ids])
            feats = points_by_class(xy, labels, NUCLS)
            if regions:
                w, h = Image.open(img).size
                feats.append(rectangle(0, 0, w, h))
            write_qupath(folder / f"{img.stem}.geojson", feats)
        (out / f"{name}.inputs").write_text("\n".join(str(p) for p, _, _ in nucls("train")))


def sparse(out: Path, rng: np.random.Generator) -> None:
    """The goal's classes-mode setting: a random 20% of the points of 5 tiles (BRCA-M2C train; NuCLS train_*)."""
    brca = DATA / "brca-m2c" / "images"
    train = load_split("train")
    nucls_train = nucls("train")
    sets = (
        (
            "brca3_5tiles_20pct",
            BRCA3,
            [
                (brca / f"{train[int(i)].name}.png", train[int(i)].xy, train[int(i)].labels)
                for i in rng.choice(len(train), 5, replace=False)
            ],
        ),
        (
            "nucls_5crops_20pct",
            NUCLS,
            [
                (p, xy, np.array([NUCLS.index(NUCLS_IDS[int(i)]) for i in ids]))
                for p, xy, ids in [nucls_train[int(i)] for i in rng.choice(10, 5, replace=False)]
            ],
        ),
    )
    for name, names, images in sets:
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for path, xy, labels in images:
            keep = rng.random(len(labels)) < 0.2
            write_qupath(folder / f"{path.stem}.geojson", points_by_class(xy[keep], labels[keep], names))
        (out / f"{name}.inputs").write_text("\n".join(str(p) for p, _, _ in images))


def test_set(dataset: str, names: list[str]) -> tuple[list, float]:
    """[(image at the model mpp, gt xy in its pixels, gt class ids in ``names``)], pixels per model pixel."""
    if dataset == "nucls":
        out = []
        for img, xy, ids in nucls("test"):
            rgb = Image.open(img).convert("RGB")
            half = np.asarray(rgb.resize((rgb.width // 2, rgb.height // 2), Image.BILINEAR))
            ids = [names.index(NUCLS_IDS[int(i)]) if NUCLS_IDS[int(i)] in names else 0 for i in ids]  # base: det only
            out.append((half, (xy + 0.5) / 2 - 0.5, np.array(ids)))
        return out, 2.0
    relabel = np.arange(3) if len(names) == 3 else np.array([0, 1, 1])  # BRCA3 or the base weights: ids as is
    return [(im.image, im.xy.astype(np.float64), relabel[im.labels]) for im in load_split("test")], 1.0


def score(weights: Path, dataset: str) -> dict:
    model, meta = load_weights(weights)
    names = [str(n) for n in meta.classes]
    images, _ = test_set(dataset, names)
    engine = TorchEngine(model, "cpu", "fp32")
    rows, start = [], time.time()
    for image, xy, labels in images:
        nuc = predict_image(engine, image, meta.tile_size, 32, DecodeConfig())
        rows.append((xy, labels, nuc.xy, nuc.class_id))
    out = {"weights": str(weights), "dataset": dataset, "classes": names, "seconds": round(time.time() - start, 1)}
    for matcher in ("mcspatnet", "hungarian"):
        out[matcher] = {k: round(v, 4) for k, v in score_detections(rows, len(names), 6.0, matcher).as_dict().items()}
    agree = total = 0
    for xy, labels, pxy, pcls in rows:
        pairs = np.array(hungarian_match(xy, pxy, 6.0)).reshape(-1, 2)
        agree += int((pcls[pairs[:, 1]] == labels[pairs[:, 0]]).sum())
        total += len(pairs)
    out["agreement_on_matched"] = round(agree / max(total, 1), 4)
    return out


def features(model, images, tile: int) -> tuple[list, list]:
    """Per image: (detected xy, their point features, class logits unused)."""
    engine = TorchEngine(model, "cpu", "fp32")
    dets = [predict_image(engine, im.image, tile, 32, DecodeConfig(), features=True) for im in images]
    return dets


def budget(out_json: Path, budgets=(25, 50, 100, 200, 400, 1865), repeats: int = 3) -> None:
    """Classes mode at several budgets of annotated nuclei (random over the train split), scored on test."""
    model, meta = load_weights(None)
    train, test = load_split("train"), load_split("test")
    start = time.time()
    det_train, det_test = features(model, train, meta.tile_size), features(model, test, meta.tile_size)
    pass_seconds = time.time() - start
    feats, labels, groups = [], [], []
    for g, (im, nuc) in enumerate(zip(train, det_train)):
        pairs = np.array(hungarian_match(im.xy.astype(float), nuc.xy, 6.0)).reshape(-1, 2)
        feats.append(torch.from_numpy(nuc.feat[pairs[:, 1]]))
        labels.append(im.labels[pairs[:, 0]])
        groups.append(np.full(len(pairs), g))
    feats, labels, groups = torch.cat(feats), np.concatenate(labels), np.concatenate(groups)
    results = {"network_pass_seconds": round(pass_seconds, 1), "matched_train_nuclei": int(len(labels)), "runs": []}
    for tag, names, relabel in (("3 classes", BRCA3, np.arange(3)), ("immune vs other", IMMUNE, np.array([0, 1, 1]))):
        for n in budgets:
            for r in range(repeats if n < len(labels) else 1):
                rng = np.random.default_rng(1000 * r + n)
                pick = rng.choice(len(labels), min(n, len(labels)), replace=False)
                data = PointFeatures(feats[pick], relabel[labels[pick]], groups[pick], 0)
                t = time.time()
                try:
                    head, rep = train_classes(model.classifier, data, tuple(names), ClassesConfig())
                except Exception as exc:  # noqa: BLE001 - a budget too small for CV is a result too
                    results["runs"].append({"task": tag, "points": n, "repeat": r, "error": str(exc)})
                    continue
                fit_s = time.time() - t
                rows = []
                with torch.no_grad():
                    for im, nuc in zip(test, det_test):
                        pred = head(torch.from_numpy(nuc.feat)).argmax(1).numpy()
                        rows.append((im.xy.astype(float), relabel[im.labels], nuc.xy, pred))
                s = score_detections(rows, len(names), 6.0, "mcspatnet").as_dict()
                h = score_detections(rows, len(names), 6.0, "hungarian").as_dict()
                results["runs"].append(
                    {
                        "task": tag,
                        "points": n,
                        "repeat": r,
                        "fit_seconds": round(fit_s, 1),
                        "chosen": rep["chosen"],
                        "cv_agreement": round(rep["scores"]["agreement"], 4),
                        "cv_macro_f1": round(rep["scores"]["macro_f1"], 4),
                        "test_macro_f1_mcspatnet": round(s["macro_f1"], 4),
                        "test_det_f1_mcspatnet": round(s["det_f1"], 4),
                        "test_macro_f1_hungarian": round(h["macro_f1"], 4),
                    }
                )
                print(json.dumps(results["runs"][-1]), flush=True)
    out_json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    torch.manual_seed(0)
    cmd = sys.argv[1]
    if cmd == "annotate":
        annotate(Path(sys.argv[2]))
    elif cmd == "score":
        print(json.dumps(score(Path(sys.argv[2]), sys.argv[3]), indent=2))
    elif cmd == "budget":
        budget(Path(sys.argv[2]))
