"""Accuracy gate of reduced precisions against fp32 (issue 18): BRCA-M2C F1 and nucleus positions on a real slide.

    python -m train.precision_gate [--engines torch:fp32,torch:bf16,onnx:fp32,onnx:int8-static] [--splits val,test]
        [--slide ../shared/data/wsi/CMU-1-Small-Region.svs] [--json gate.json]

The first engine is the reference. Each ``ENGINE:PRECISION`` passes when, on every split, its det F1 and macro F1
(BRCA-M2C protocol, :mod:`train.evaluate`) are within ``F1_TOLERANCE`` of the reference's, and on the slide at
least ``POSITION_SHARE`` of nuclei are paired one-to-one with a reference nucleus within ``POSITION_TOLERANCE_PX``
level-0 pixels (the share counts against the larger of the two nucleus counts, so missing and extra nuclei fail it).
``onnx:int8-static`` is a static QDQ model calibrated on BRCA-M2C train tiles (built in a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree

from muse_fast.config import InferConfig
from muse_fast.io.readers import open_slide
from muse_fast.io.tiling import tile_grid
from muse_fast.model.weights import file_sha256, load_weights, resolve_weights
from muse_fast.runtime.engines import EngineInputs, OnnxEngine, _cached_onnx, create_engine
from muse_fast.runtime.pipeline import predict_slide
from muse_fast.runtime.predict import crop_tile

from .config import one_line_errors
from .data.brca import load_split
from .data.paths import shared_data_dir
from .evaluate import EvalConfig, evaluate_images

F1_TOLERANCE = 0.005
POSITION_TOLERANCE_PX = 0.5
POSITION_SHARE = 0.99
CALIBRATION_TILES = 64


def paired_within(ref_xy: np.ndarray, xy: np.ndarray, tolerance: float) -> dict:
    """Mutual nearest neighbours of two point sets within ``tolerance``; their share of the larger set."""
    n = max(len(ref_xy), len(xy))
    if len(ref_xy) == 0 or len(xy) == 0:
        return {"n_ref": len(ref_xy), "n": len(xy), "paired": 0, "share": 1.0 if n == 0 else 0.0, "max_px": None}
    d_ref, to_other = cKDTree(xy).query(ref_xy)
    _, to_ref = cKDTree(ref_xy).query(xy)
    mutual = to_ref[to_other] == np.arange(len(ref_xy))
    paired = mutual & (d_ref <= tolerance)
    return {
        "n_ref": len(ref_xy),
        "n": len(xy),
        "paired": int(paired.sum()),
        "share": float(paired.sum() / n),
        "max_px": float(d_ref[mutual].max()) if mutual.any() else None,
        "pairs": np.flatnonzero(paired),  # reference indices, for class agreement (not written to JSON)
        "partner": to_other[paired],
    }


def calibration_tiles(count: int = CALIBRATION_TILES, tile: int = 224, overlap: int = 32) -> np.ndarray:
    """``count`` tiles of the BRCA-M2C train split, cut as ``predict_image`` cuts them (first images first)."""
    tiles = []
    for im in load_split("train"):
        h, w = im.image.shape[:2]
        tiles += [crop_tile(im.image, t, tile) for t in tile_grid(w, h, tile, overlap)]
        if len(tiles) >= count:
            break
    return np.stack(tiles[:count])


def build_engine(spec: str, inputs: EngineInputs, work: Path):
    """``ENGINE:PRECISION``; ``onnx:int8-static`` quantizes the fp32 export with BRCA-M2C train calibration."""
    name, _, precision = spec.partition(":")
    if spec == "onnx:int8-static":
        from muse_fast.export.quantize import quantize_static_int8

        path = quantize_static_int8(_cached_onnx(inputs), work / "int8-static.onnx", calibration_tiles())
        return OnnxEngine(replace(inputs, precision="int8"), path)
    return create_engine(name, replace(inputs, precision=precision or "auto"))


def f1_scores(model, engine, split: str, cfg: EvalConfig) -> dict:
    scores = evaluate_images(model, load_split(split), cfg, engine=engine)
    return {m: {k: scores[m][k] for k in ("det_f1", "macro_f1")} for m in ("mcspatnet", "hungarian")}


def slide_nuclei(engine, meta, slide_path: Path):
    slide = open_slide(slide_path)
    try:
        nuclei, _, _ = predict_slide(slide, engine, meta, InferConfig(out_dir=Path("."), quiet=True))
    finally:
        slide.close()
    return nuclei


def verdict(ref: dict, got: dict) -> dict:
    """Deltas against the reference and whether the gate passes."""
    out, ok = {}, True
    for split, scores in got["f1"].items():
        for key in ("det_f1", "macro_f1"):
            delta = scores["mcspatnet"][key] - ref["f1"][split]["mcspatnet"][key]
            out[f"{split}_{key}_delta"] = round(delta, 4)
            ok &= abs(delta) <= F1_TOLERANCE
    if "slide" in got:
        ok &= got["slide"]["share"] >= POSITION_SHARE
    out["pass"] = bool(ok)
    return out


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="torch:fp32,torch:bf16,onnx:fp32,onnx:int8-static")
    parser.add_argument("--splits", default="val,test")
    parser.add_argument("--slide", type=Path, default=shared_data_dir() / "wsi" / "CMU-1-Small-Region.svs")
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=0, help="torch and ORT threads (0: torch's default)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, meta = load_weights(args.weights)
    inputs = EngineInputs(model, meta, file_sha256(resolve_weights(args.weights)), "cpu", 16)
    cfg = EvalConfig(tile_size=meta.tile_size)
    results: dict = {}
    with tempfile.TemporaryDirectory() as work:
        for spec in args.engines.split(","):
            start = time.perf_counter()
            engine = build_engine(spec, inputs, Path(work))
            res: dict = {"precision": engine.precision, "f1": {}}
            for split in args.splits.split(","):
                res["f1"][split] = f1_scores(model, engine, split, cfg)
            if args.slide.exists():
                nuclei = slide_nuclei(engine, meta, args.slide)
                res["xy"], res["class_id"] = nuclei.xy, nuclei.class_id
            ref = next(iter(results.values()), None)
            if ref is None and "xy" in res:
                res["slide"] = {"n": len(res["xy"])}
            if ref is not None and "xy" in res:
                pairs = paired_within(ref["xy"], res["xy"], POSITION_TOLERANCE_PX)
                same = ref["class_id"][pairs.pop("pairs")] == res["class_id"][pairs.pop("partner")]
                res["slide"] = {**pairs, "class_agreement": float(same.mean()) if len(same) else None}
            if ref is not None:
                res["gate"] = verdict(ref, res)
            res["seconds"] = round(time.perf_counter() - start, 1)
            results[spec] = res
            shown = {k: v for k, v in res.items() if k not in ("xy", "class_id")}
            print(f"{spec}: {json.dumps(shown)}", flush=True)
    report = {s: {k: v for k, v in r.items() if k not in ("xy", "class_id")} for s, r in results.items()}
    report["_setup"] = {"slide": str(args.slide), "threads": torch.get_num_threads(), "torch": torch.__version__}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
