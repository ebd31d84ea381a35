"""The provenance record ``train.finetune`` writes into every weights file (read by ``muse-fast models``)."""

from __future__ import annotations

import json
from pathlib import Path

from muse_fast.model.provenance import RECIPE_KEYS, current_commit, file_provenance
from muse_fast.model.weights import file_sha256


def init_provenance(init: str, seed: int) -> dict | str:
    """``random (seed N)``, or the init file with its checksum and, where known, the run that produced it."""
    if not init:
        return f"random (seed {seed})"
    path = Path(init)
    out: dict = {"file": str(path), "sha256": file_sha256(path)[:16] if path.is_file() else "missing"}
    if path.suffix == ".pth":  # a backbone: train.pretrain writes config.json beside it
        run = path.parent / "config.json"
        if run.is_file():
            cfg = json.loads(run.read_text())
            out["pretraining"] = {k: cfg.get(k) for k in ("model", "stage", "steps", "lambda_nu", "rois", "seed")}
            index = Path(str(cfg.get("rois", ""))) / "index.json"
            if index.is_file():
                store = json.loads(index.read_text())
                out["pretraining"]["positions"] = store.get("detector", "not recorded")
                out["pretraining"]["rois"] = {"path": cfg.get("rois"), "count": store.get("count")}
        else:
            out["pretraining"] = "not recorded (no config.json beside the backbone)"
    elif path.is_file():
        out["provenance"] = file_provenance(path)
    return out


def default_weights_sha() -> str:
    from muse_fast.model.weights import file_sha256, resolve_weights

    return file_sha256(resolve_weights(None))


def finetune_provenance(cfg) -> dict:
    """Architecture, init, data, recipe and commit of a ``train.finetune`` run with config ``cfg``."""
    data = "BRCA-M2C train (80 images, 0.5 um/px, labels); val (10 images) selects and calibrates"
    if cfg.pseudo_rois:
        data += f"; pseudo-labels on the ROI store {cfg.pseudo_rois}"
    if cfg.self_train_rois:
        data += (
            f"; self-training on the ROI store {cfg.self_train_rois} ({cfg.self_train_share} of the views), labelled "
            f"by the default weights (sha256 {default_weights_sha()[:12]}) under flip TTA"
        )
    if cfg.ignore_unlabelled:
        data += f"; nuclei found by {cfg.ignore_unlabelled} away from the labels left out of the negatives"
    return {
        "architecture": cfg.model,
        "init": init_provenance(cfg.init, cfg.seed),
        "data": data,
        "recipe": {"command": "train.finetune", **{k: getattr(cfg, k) for k in RECIPE_KEYS if hasattr(cfg, k)}},
        "commit": current_commit(),
    }
