"""Probe: do context features (the feature map average-pooled around each nucleus) classify better than the point
feature alone? Same detector, same classifier recipe; NuCLS (10 train crops -> 5 test crops), shifted-nucls,
BRCA-M2C (points of 5 / 20 train tiles -> val split). Scores on matched nuclei (agreement, macro F1 over classes)
and with detection errors (macro F1 as train.evaluate).

    python benchmarks/adapt_measure.py shifted-nucls /tmp/shiftn "pale=0.4,stretch=1.3,shear=0.2,hed=0.2"
    python benchmarks/results/2026-12-07-context-features/probe.py nucls shiftn brca   # writes probe.json here
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # benchmarks/, for adapt_measure
import adapt_measure as am  # noqa: E402

from muse_fast.adapt.classes import Candidate, fit, single_thread  # noqa: E402
from muse_fast.adapt.report import class_scores  # noqa: E402
from muse_fast.model.heads import PointClassifier  # noqa: E402
from muse_fast.model.registry import DenseOutputs  # noqa: E402
from muse_fast.model.weights import load_weights  # noqa: E402
from muse_fast.post.decode import DecodeConfig  # noqa: E402
from muse_fast.runtime.engines import TorchEngine  # noqa: E402
from muse_fast.runtime.predict import predict_image  # noqa: E402
from muse_fast.train.data.brca import load_split  # noqa: E402
from muse_fast.train.metrics import hungarian_match, score_detections  # noqa: E402

KERNELS = (7, 21)  # fmap pixels (2 um each at 0.5 um/px): 14 um and 42 um


class CtxEngine:
    def __init__(self, engine, d):
        self.e, self.d = engine, d
        self.device, self.precision = engine.device, engine.precision

    def run(self, tiles):
        out = self.e.run(tiles)
        f = out.fmap.float()
        pools = [F.avg_pool2d(f, k, 1, k // 2, count_include_pad=False) for k in KERNELS]
        return DenseOutputs(out.centre, torch.cat([f, *pools], 1))

    def classify(self, feats):
        return self.e.classify(feats[:, : self.d])


def dets_of(engine, images, tile):
    return [predict_image(engine, im, tile, 32, DecodeConfig(), features=True) for im in images]


def matched(sets, dets, radius):
    X, Y, G = [], [], []
    for g, ((_, xy, lab), nuc) in enumerate(zip(sets, dets)):
        pairs = np.asarray(hungarian_match(xy, nuc.xy, radius)).reshape(-1, 2)
        X.append(nuc.feat[pairs[:, 1]])
        Y.append(lab[pairs[:, 0]])
        G.append(np.full(len(pairs), g))
    return torch.from_numpy(np.concatenate(X)).float(), np.concatenate(Y), np.concatenate(G)


def fit_fresh(feats, labels, k, steps=300, lr=2e-3, wd=1e-2):
    torch.manual_seed(2025)
    head = PointClassifier(feats.shape[1], k).train()
    w = torch.from_numpy(np.bincount(labels, minlength=k).astype(np.float32)).clamp(min=1)
    w = (1 / w) / (1 / w).mean()
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=wd)
    t = torch.from_numpy(labels)
    with single_thread():
        for _ in range(steps):
            loss = F.cross_entropy(head(feats), t, weight=w)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return head.eval()


def evaluate(train_sets, test_sets, names, radius, label):
    model, meta = load_weights(None)
    base = TorchEngine(model, "cpu", "fp32")
    d = model.classifier.mlp[0].normalized_shape[0]
    eng = CtxEngine(base, d)
    k = len(names)
    tr = dets_of(eng, [s[0] for s in train_sets], meta.tile_size)
    te = dets_of(eng, [s[0] for s in test_sets], meta.tile_size)
    Xtr, Ytr, Gtr = matched(train_sets, tr, radius)
    Xte, Yte, _ = matched(test_sets, te, radius)
    out = {"set": label, "train_points": len(Ytr), "test_points": len(Yte), "dim": d}
    variants = {
        "point_fresh_mlp": (slice(0, d), "fresh"),
        "point+ctx_fresh_mlp": (slice(None), "fresh"),
        "point_base_mlp (adapt's mlp candidate)": (slice(0, d), "base_mlp"),
        "point_base_linear (adapt's linear candidate)": (slice(0, d), "base_linear"),
    }
    folds = Gtr % 5 if len(np.unique(Gtr)) >= 5 else np.arange(len(Ytr)) % 5
    for name, (sl, how) in variants.items():

        def make(x, y, how=how):
            if how == "fresh":
                return fit_fresh(x, y, k)
            cand = Candidate("mlp", 2e-3, 1e-2) if how == "base_mlp" else Candidate("linear", 1e-2, 1e-4)
            torch.manual_seed(2025)
            return fit(model.classifier, x, y, k, cand, 300)

        pred = np.zeros(len(Ytr), np.int64)
        for f in np.unique(folds):
            h = make(Xtr[folds != f][:, sl], Ytr[folds != f])
            with torch.no_grad():
                pred[folds == f] = h(Xtr[folds == f][:, sl]).argmax(1).numpy()
        cv = class_scores(pred, Ytr, names)
        h = make(Xtr[:, sl], Ytr)
        with torch.no_grad():
            p = h(Xte[:, sl]).argmax(1).numpy()
        on_matched = class_scores(p, Yte, names)
        rows = []
        for (_, xy, lab), nuc in zip(test_sets, te):
            with torch.no_grad():
                c = h(torch.from_numpy(nuc.feat).float()[:, sl]).argmax(1).numpy()
            rows.append((xy, lab, nuc.xy, c))
        full = score_detections(rows, k, radius, "hungarian").as_dict()
        out[name] = {
            "cv_macro_f1": round(cv["macro_f1"], 4),
            "cv_agreement": round(float((pred == Ytr).mean()), 4),
            "test_matched_agreement": round(float((p == Yte).mean()), 4),
            "test_matched_macro_f1": round(on_matched["macro_f1"], 4),
            "test_macro_f1": round(full["macro_f1"], 4),
            "test_det_f1": round(full["det_f1"], 4),
        }
    print(json.dumps(out, indent=1), flush=True)
    return out


def nucls_sets(split):
    names = list(am.NUCLS)
    s, _ = am.test_set("nucls", names, split)
    return s, names


def main(which):
    res = []
    if "nucls" in which:
        tr, names = nucls_sets("train")
        te, _ = nucls_sets("test")
        res.append(evaluate(tr, te, names, 3.0 / 0.5, "nucls"))
    if "shiftn" in which:
        names = list(am.NUCLS)
        from muse_fast.adapt.annotations import class_table
        from muse_fast.adapt.inputs import load_inputs, read_windows

        inputs = [Path(p) for p in Path("/tmp/shiftn/train.inputs").read_text().split()]
        items = load_inputs(inputs, Path("/tmp/shiftn/regions"), 0.5)
        wn, _ = class_table([i.annotations for i in items])
        wins = [w for i in items for w in read_windows(i, wn, 0.5, 0.5)]
        remap = np.array([names.index(n) for n in wn])
        tr = [(w.image, w.xy.astype(np.float64), remap[w.labels]) for w in wins if len(w.xy)]
        te, _ = am.test_set("shifted:/tmp/shiftn", names, "test")
        res.append(evaluate(tr, te, names, 6.0, "shifted-nucls"))
    if "brca" in which:
        names = list(am.BRCA3)
        train, val = load_split("train"), load_split("val")
        rng = np.random.default_rng(2025)
        for n in (5, 20):
            pick = rng.choice(len(train), n, replace=False)
            tr = [(train[i].image, train[i].xy.astype(np.float64), train[i].labels) for i in pick]
            va = [(im.image, im.xy.astype(np.float64), im.labels) for im in val]
            res.append(evaluate(tr, va, names, 6.0, f"brca {n} train tiles -> val"))
    (HERE / "probe.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
