"""Measurements of ``muse-fast adapt`` on BRCA-M2C and the NuCLS subset (docs/results.md, docs/adapt.md).

    python benchmarks/adapt_measure.py annotate OUT        # QuPath exports for the CLI runs (BRCA-M2C, NuCLS)
    python benchmarks/adapt_measure.py score W.pt DATASET   # detection and class scores of W on the test images
    python benchmarks/adapt_measure.py mapped               # NuCLS: the base weights' classes renamed (no adapting)
    python benchmarks/adapt_measure.py budget OUT.json      # classes mode: F1 against the number of annotated nuclei
    python benchmarks/adapt_measure.py search ANN OUT.json  # NuCLS: classifier settings chosen by CV on train crops
    python benchmarks/adapt_measure.py passes ANN           # the network pass of classes mode, three ways
    python benchmarks/adapt_measure.py shifted OUT SPEC [SEED]  # BRCA-M2C made into tissue the base weights miss
    python benchmarks/adapt_measure.py shifted-nucls OUT SPEC  # the same for NuCLS, whose regions are complete
    python benchmarks/adapt_measure.py sweep W.pt DATASET   # det and macro F1 of W at thresholds 0.1 to 0.8

``score`` runs the weights the way ``muse-fast infer`` does (tiled, at the model's mpp, fp32 torch engine) on the
test images (BRCA-M2C: the official test split; NuCLS: the test_* crops), maps the ground truth to the weights'
class names and scores with train.evaluate's matchers. ``budget`` fits the classes-mode classifier (the same code
as the CLI) on random subsets of the train split's annotated nuclei, from one pass of the base network. ``search``
cross-validates classifier settings (kind, lr, weight decay, steps, class-balance power, and per-class logit offsets
tuned on the other folds) over the NuCLS train crops (the ``nucls_points`` export in ANN), and scores the default
and the best by cross-validation on the test crops. ``shifted`` writes BRCA-M2C under a ``train.evaluate --perturb``
SPEC (e.g. pale nuclei, elongation, stain shift) as PNGs: 5 train tiles as complete regions and as a random 20% of
their points, every test tile with its moved labels; ``score W shifted:OUT`` scores on those test tiles. ``sweep``
shows how much a better detection threshold could give W on the test images (an oracle, for diagnosis only): one
network pass per image, decoded at each threshold.
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

import muse_fast.adapt.classes as classes  # noqa: E402
from muse_fast.adapt.annotations import class_table  # noqa: E402
from muse_fast.adapt.classes import Candidate, ClassesConfig, fit, fold_ids, single_thread, train_classes  # noqa: E402
from muse_fast.adapt.detect import PointFeatures, detect, detect_windows, matched_features  # noqa: E402
from muse_fast.adapt.inputs import load_inputs, read_windows  # noqa: E402
from muse_fast.adapt.report import class_scores  # noqa: E402
from muse_fast.model.weights import load_weights  # noqa: E402
from muse_fast.post.decode import DecodeConfig  # noqa: E402
from muse_fast.runtime.engines import TorchEngine  # noqa: E402
from muse_fast.runtime.predict import predict_image  # noqa: E402
from muse_fast.train.calibrate import CachedEngine  # noqa: E402
from muse_fast.train.data.brca import LabelledImage, load_split  # noqa: E402
from muse_fast.train.data.paths import shared_data_dir  # noqa: E402
from muse_fast.train.metrics import hungarian_match, score_detections  # noqa: E402
from muse_fast.train.perturb import parse_perturbation, perturb_image, stress_labelled  # noqa: E402

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


def shifted(out: Path, spec: str, seed: int = 2025) -> None:
    """BRCA-M2C under the perturbation ``spec`` (stress tests move the labels): ``OUT/train/*.png`` for 5 train tiles
    with QuPath exports ``OUT/regions`` (every point, the tile a complete region) and ``OUT/sparse`` (a random 20% of
    the points), ``OUT/test/*.png`` + ``*.npz`` (xy, labels) for the test split. All at 0.5 um/px."""
    perturbation = parse_perturbation(spec)
    if perturbation.scale != 1:
        raise SystemExit("shifted: scale would move the pixels but not the labels; leave it out of SPEC")
    rng = np.random.default_rng(seed)  # which 5 train tiles, and which 20% of their points
    train = load_split("train")
    picks = [train[int(i)] for i in rng.choice(len(train), 5, replace=False)]
    for folder in ("train", "test", "regions", "sparse"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    for index, im in enumerate(picks):
        im = stress_labelled(im, perturbation, index, 0.5)
        Image.fromarray(perturb_image(im.image, perturbation, index)).save(out / "train" / f"{im.name}.png")
        h, w = im.image.shape[:2]
        write_qupath(
            out / "regions" / f"{im.name}.geojson", [*points_by_class(im.xy, im.labels, BRCA3), rectangle(0, 0, w, h)]
        )
        keep = rng.random(len(im.labels)) < 0.2
        write_qupath(out / "sparse" / f"{im.name}.geojson", points_by_class(im.xy[keep], im.labels[keep], BRCA3))
    for index, im in enumerate(load_split("test")):
        im = stress_labelled(im, perturbation, 1000 + index, 0.5)
        Image.fromarray(perturb_image(im.image, perturbation, 1000 + index)).save(out / "test" / f"{im.name}.png")
        np.savez(out / "test" / f"{im.name}.npz", xy=im.xy, labels=im.labels)
    (out / "train.inputs").write_text("\n".join(str(out / "train" / f"{im.name}.png") for im in picks))
    (out / "spec.txt").write_text(perturbation.describe() + "\n")


def shifted_nucls(out: Path, spec: str) -> None:
    """NuCLS (every nucleus annotated) made into tissue the base weights miss: each crop halved to 0.5 um/px, then
    under ``spec`` as :func:`shifted`: ``OUT/train`` (the 10 train crops) with ``OUT/regions`` (every point, the crop
    a complete region, NuCLS's 4 classes), ``OUT/test`` (the 5 test crops, ``*.npz``: xy, labels, class names).
    Unlike BRCA-M2C's dot labels, NuCLS's are complete, so full mode is measured with truly complete regions."""
    perturbation = parse_perturbation(spec)
    if perturbation.scale != 1:
        raise SystemExit("shifted-nucls: scale would move the pixels but not the labels; leave it out of SPEC")
    order = [NUCLS_IDS[i] for i in sorted(NUCLS_IDS)]  # NuCLS's ids -> names
    for folder in ("train", "test", "regions"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    for split, first in (("train", 0), ("test", 1000)):
        for index, (img, xy, ids) in enumerate(nucls(split)):
            rgb = Image.open(img).convert("RGB")
            half = np.asarray(rgb.resize((rgb.width // 2, rgb.height // 2), Image.BILINEAR))
            im = LabelledImage(img.stem, half, ((xy + 0.5) / 2 - 0.5).astype(np.float32), ids)
            im = stress_labelled(im, perturbation, first + index, 0.5)
            Image.fromarray(perturb_image(im.image, perturbation, first + index)).save(out / split / f"{im.name}.png")
            if split == "train":
                h, w = im.image.shape[:2]
                feats = [*points_by_class(im.xy, im.labels, order), rectangle(0, 0, w, h)]
                write_qupath(out / "regions" / f"{im.name}.geojson", feats)
            else:
                np.savez(out / "test" / f"{im.name}.npz", xy=im.xy, labels=im.labels, names=np.array(order))
    (out / "train.inputs").write_text("\n".join(str(out / "train" / f"{p.stem}.png") for p, _, _ in nucls("train")))
    (out / "spec.txt").write_text(perturbation.describe() + "\n")


def test_set(dataset: str, names: list[str], split: str = "test") -> tuple[list, float]:
    """[(image at the model mpp, gt xy in its pixels, gt class ids in ``names``)], pixels per model pixel."""
    relabel = np.arange(3) if len(names) == 3 else np.array([0, 1, 1])  # BRCA3 or the base weights: ids as is
    if dataset.startswith("shifted:"):  # written by shifted(): BRCA-M2C's labels, moved with the pixels
        folder = Path(dataset.split(":", 1)[1]) / split
        out = []
        for png in sorted(folder.glob("*.png")):
            gt = np.load(png.with_suffix(".npz"))
            if "names" in gt:  # written by shifted_nucls(): NuCLS's classes by name (the base weights: detection only)
                ids = [names.index(str(gt["names"][i])) if str(gt["names"][i]) in names else 0 for i in gt["labels"]]
            else:
                ids = relabel[gt["labels"]]
            out.append((np.asarray(Image.open(png).convert("RGB")), gt["xy"].astype(np.float64), np.asarray(ids)))
        return out, 1.0
    if dataset == "nucls":
        out = []
        for img, xy, ids in nucls(split):
            rgb = Image.open(img).convert("RGB")
            half = np.asarray(rgb.resize((rgb.width // 2, rgb.height // 2), Image.BILINEAR))
            ids = [names.index(NUCLS_IDS[int(i)]) if NUCLS_IDS[int(i)] in names else 0 for i in ids]  # base: det only
            out.append((half, (xy + 0.5) / 2 - 0.5, np.array(ids)))
        return out, 2.0
    return [(im.image, im.xy.astype(np.float64), relabel[im.labels]) for im in load_split("test")], 1.0


BASE_TO_NUCLS = {"lymphocyte": "sTIL", "tumor": "tumor_any", "stromal": "nonTIL_stromal"}  # no class maps to other


def score(weights: Path | None, dataset: str, mapping: dict[str, str] | None = None, split: str = "test") -> dict:
    """Scores of ``weights`` on ``dataset``'s ``split``; with ``mapping`` (weights' class -> NuCLS class), the
    weights' own classes renamed, as a zero-shot baseline for adapting to NuCLS's classes."""
    model, meta = load_weights(weights)
    names = [str(n) for n in meta.classes] if mapping is None else list(NUCLS)
    rename = (
        np.arange(len(names)) if mapping is None else np.array([names.index(mapping[str(c)]) for c in meta.classes])
    )
    images, _ = test_set(dataset, names, split)
    engine = TorchEngine(model, "cpu", "fp32")
    rows, start = [], time.time()
    for image, xy, labels in images:
        nuc = predict_image(engine, image, meta.tile_size, 32, DecodeConfig())
        rows.append((xy, labels, nuc.xy, rename[nuc.class_id]))
    out = {"weights": str(weights), "dataset": dataset, "split": split, "classes": names, "mapping": mapping}
    out["seconds"] = round(time.time() - start, 1)
    for matcher in ("mcspatnet", "hungarian"):
        out[matcher] = {k: round(v, 4) for k, v in score_detections(rows, len(names), 6.0, matcher).as_dict().items()}
    agree = total = 0
    for xy, labels, pxy, pcls in rows:
        pairs = np.array(hungarian_match(xy, pxy, 6.0)).reshape(-1, 2)
        agree += int((pcls[pairs[:, 1]] == labels[pairs[:, 0]]).sum())
        total += len(pairs)
    out["agreement_on_matched"] = round(agree / max(total, 1), 4)
    return out


SWEEP = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def sweep(weights: Path | None, dataset: str, thresholds=SWEEP) -> list[dict]:
    """Det and macro F1 (BRCA-M2C matcher) of ``weights`` on ``dataset``'s test images at each of ``thresholds``."""
    model, meta = load_weights(weights)
    images, _ = test_set(dataset, [str(n) for n in meta.classes])
    engine = TorchEngine(model, "cpu", "fp32")
    found = {t: [] for t in thresholds}
    for image, _, _ in images:
        cached = CachedEngine(engine)  # the network once per image, decoded at every threshold
        for t in thresholds:
            cached.rewind(None)
            found[t].append(predict_image(cached, image, meta.tile_size, 32, DecodeConfig(threshold=t)))
    out = []
    for t in thresholds:
        rows = [(xy, labels, nuc.xy, nuc.class_id) for (_, xy, labels), nuc in zip(images, found[t])]
        scores = score_detections(rows, len(meta.classes), 6.0, "mcspatnet").as_dict()
        out.append(
            {"threshold": t, **{k: round(scores[k], 4) for k in ("det_precision", "det_recall", "det_f1", "macro_f1")}}
        )
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


def search(ann: Path, out_json: Path) -> None:
    """NuCLS 4 classes: classifier settings by 5-fold cross-validation over the 10 train crops, then the test crops."""
    import itertools

    inputs = [Path(p) for p in (ann.parent / f"{ann.name}.inputs").read_text().split()]
    items = load_inputs(inputs, ann, NUCLS_MPP)
    names, _ = class_table([i.annotations for i in items])
    base, meta = load_weights(None)
    engine = TorchEngine(base, "cpu", "auto")
    windows = [w for i in items for w in read_windows(i, names, meta.mpp, NUCLS_MPP)]
    data = matched_features(engine, windows, [i.path.stem for i in items], meta.tile_size, meta.mpp)
    test, _ = test_set("nucls", list(names))
    dets = list(detect_windows(engine, [im for im, _, _ in test], meta.tile_size))
    k = len(names)

    def fitted(cand, steps, power, feats, labels):
        weights = classes.class_weights
        classes.class_weights = lambda lab, n, _p: weights(lab, n, power)  # the balance power under test
        torch.manual_seed(2025)  # the new last layer's initialisation, as train_classes seeds it
        try:
            return fit(base.classifier, feats, labels, k, cand, steps)
        finally:
            classes.class_weights = weights

    def out_of_fold(cand, steps, power, folds):
        logits = torch.zeros(len(data.labels), k)
        for f in np.unique(folds):
            head = fitted(cand, steps, power, data.feats[folds != f], data.labels[folds != f])
            with torch.no_grad(), single_thread():
                logits[folds == f] = head(data.feats[folds == f])
        return logits

    def offsets(logits, labels, rounds=2, grid=np.linspace(-2, 2, 21)):
        b = np.zeros(k)
        for _ in range(rounds):
            for c in range(k):
                trial = [np.where(np.arange(k) == c, v, b) for v in grid]
                f1 = [
                    class_scores((logits + torch.tensor(t).float()).argmax(1).numpy(), labels, names)["macro_f1"]
                    for t in trial
                ]
                b = trial[int(np.argmax(f1))]
        return b

    def on_test(head, bias=None):
        rows = []
        for (_, xy, lab), nuc in zip(test, dets):
            with torch.no_grad():
                logit = head(torch.from_numpy(nuc.feat)) + (0 if bias is None else torch.tensor(bias).float())
            rows.append((xy, lab, nuc.xy, logit.argmax(1).numpy()))
        s = score_detections(rows, k, 6.0, "mcspatnet").as_dict()
        return {"test_macro_f1": round(s["macro_f1"], 4), "test_det_f1": round(s["det_f1"], 4)}

    folds, _ = fold_ids(data.labels, data.groups, 5, 2025)
    cands = [
        Candidate("linear", 1e-2, 1e-4),
        Candidate("mlp", 2e-3, 1e-2),
        Candidate("linear", 3e-3, 1e-3),
        Candidate("mlp", 1e-3, 5e-2),
        Candidate("mlp", 5e-4, 1e-1),
    ]
    rows = []
    for cand, steps, power in itertools.product(cands, (150, 300, 600), (0.5, 1.0)):
        logits = out_of_fold(cand, steps, power, folds)
        plain = class_scores(logits.argmax(1).numpy(), data.labels, names)
        pred = np.zeros(len(data.labels), np.int64)
        for f in np.unique(folds):  # offsets tuned on the other folds' out-of-fold logits, applied to this fold
            b = offsets(logits[folds != f], data.labels[folds != f])
            pred[folds == f] = (logits[folds == f] + torch.tensor(b).float()).argmax(1).numpy()
        tuned = class_scores(pred, data.labels, names)
        rows.append(
            {
                "kind": cand.kind,
                "lr": cand.lr,
                "weight_decay": cand.weight_decay,
                "steps": steps,
                "balance_power": power,
                "cv_macro_f1": round(plain["macro_f1"], 4),
                "cv_agreement": round(plain["agreement"], 4),
                "cv_macro_f1_offsets": round(tuned["macro_f1"], 4),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    head, rep = train_classes(base.classifier, data, names, ClassesConfig())
    result = {"points": int(len(data.labels)), "cv": rows, "default": {"chosen": rep["chosen"], **on_test(head)}}
    for key in ("cv_macro_f1", "cv_macro_f1_offsets"):
        best = max(rows, key=lambda r: r[key])
        cand = Candidate(best["kind"], best["lr"], best["weight_decay"])
        head = fitted(cand, best["steps"], best["balance_power"], data.feats, data.labels)
        bias = None
        if key == "cv_macro_f1_offsets":
            bias = offsets(
                out_of_fold(cand, best["steps"], best["balance_power"], folds),
                data.labels,
                rounds=3,
                grid=np.linspace(-2, 2, 41),
            )
        result[f"best_by_{key}"] = {**best, "offsets": None if bias is None else bias.tolist(), **on_test(head, bias)}
    print(json.dumps({k: v for k, v in result.items() if k != "cv"}, indent=2))
    out_json.write_text(json.dumps(result, indent=2) + "\n")


def passes(ann: Path) -> None:
    """Time the network pass over the windows adapt reads for the export ANN (BRCA-M2C at 0.5 um/px): one window at
    a time on torch fp32 (``detect``, the reference), then all windows' tiles in full batches at fp32 and bf16."""
    inputs = [Path(p) for p in (ann.parent / f"{ann.name}.inputs").read_text().split()]
    items = load_inputs(inputs, ann, 0.5)
    names, _ = class_table([i.annotations for i in items])
    base, meta = load_weights(None)
    windows = [w for i in items for w in read_windows(i, names, meta.mpp, 0.5)]
    for what in ("per_window_fp32", "batched_fp32", "batched_bf16"):
        wall, cpu = time.time(), time.process_time()
        if what == "per_window_fp32":
            n = sum(len(detect(base, w, meta.tile_size)) for w in windows)
        else:
            engine = TorchEngine(base, "cpu", what.split("_")[1])
            n = sum(len(x) for x in detect_windows(engine, [w.image for w in windows], meta.tile_size))
        wall, cpu = time.time() - wall, time.process_time() - cpu
        print(what, "wall", round(wall, 1), "cpu", round(cpu, 1), "nuclei", n, flush=True)


if __name__ == "__main__":
    torch.manual_seed(0)
    cmd = sys.argv[1]
    if cmd == "annotate":
        annotate(Path(sys.argv[2]))
    elif cmd == "score":
        print(json.dumps(score(Path(sys.argv[2]), sys.argv[3]), indent=2))
    elif cmd == "mapped":  # the base weights' classes renamed to NuCLS's, on its test and train crops
        print(json.dumps([score(None, "nucls", BASE_TO_NUCLS, split) for split in ("test", "train")], indent=2))
    elif cmd == "budget":
        budget(Path(sys.argv[2]))
    elif cmd == "passes":
        passes(Path(sys.argv[2]))
    elif cmd == "search":
        search(Path(sys.argv[2]), Path(sys.argv[3]))
    elif cmd == "sweep":
        print(json.dumps(sweep(Path(sys.argv[2]), sys.argv[3]), indent=2))
    elif cmd == "shifted":
        shifted(Path(sys.argv[2]), sys.argv[3], *map(int, sys.argv[4:5]))
    elif cmd == "shifted-nucls":
        shifted_nucls(Path(sys.argv[2]), sys.argv[3])
