"""Build an unlabelled ROI store with nucleus coordinates for pretraining.

    python -m train.detect_nuclei --out runs/rois [--split train] [--wsi SLIDE ...] [--detector model|blob]

Sources: the images of a BRCA-M2C split (labels are *not* used; 0.5 um/px) and random tissue ROIs from WSIs (read at
the store's mpp through our readers). Nuclei come from our detection model (default) or, with ``--detector blob``,
from a classical Laplacian-of-Gaussian blob detector on the haematoxylin channel (scikit-image).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from muse_fast.errors import BackendUnavailable
from muse_fast.io.readers import open_slide
from muse_fast.io.resample import read_at_scale
from muse_fast.io.tissue import detect_tissue

from .data.brca import BRCA_MPP, load_split
from .data.rois import Roi, RoiWriter


def blob_detector(image: np.ndarray, mpp: float) -> np.ndarray:
    """Nuclei as LoG blobs of the haematoxylin channel, radius ~2-5 um; (x, y) float32."""
    try:
        from skimage.color import rgb2hed
        from skimage.feature import blob_log
    except ImportError:
        raise BackendUnavailable("--detector blob needs scikit-image (pip install -e .[dev])") from None
    hema = rgb2hed(image)[..., 0]
    hema = (hema - hema.min()) / max(float(np.ptp(hema)), 1e-6)
    sigma = np.array([2.0, 5.0]) / mpp / np.sqrt(2)
    blobs = blob_log(hema, min_sigma=sigma[0], max_sigma=sigma[1], num_sigma=4, threshold=0.08)
    return blobs[:, [1, 0]].astype(np.float32)


def model_detector(mpp: float):
    from muse_fast.model.weights import load_weights
    from muse_fast.post.decode import DecodeConfig
    from muse_fast.runtime.engines import TorchEngine
    from muse_fast.runtime.predict import predict_image

    model, meta = load_weights()
    if abs(meta.mpp - mpp) > 1e-6:
        raise BackendUnavailable(f"the detection model runs at {meta.mpp} um/px, the store is at {mpp}")
    engine = TorchEngine(model)
    return lambda image, _mpp: predict_image(engine, image, meta.tile_size, 32, DecodeConfig()).xy.astype(np.float32)


def crops(image: np.ndarray, size: int) -> list[tuple[int, int]]:
    """Non-overlapping ``size`` crops covering the image (the last ones aligned to the far edges)."""
    h, w = image.shape[:2]
    ys = sorted({min(y, h - size) for y in range(0, max(h - size, 0) + 1, size)} | {max(h - size, 0)})
    xs = sorted({min(x, w - size) for x in range(0, max(w - size, 0) + 1, size)} | {max(w - size, 0)})
    return [(x, y) for y in ys for x in xs]


def wsi_rois(path: Path, mpp: float, size: int, count: int, rng: np.random.Generator):
    """Random ``size`` ROIs at ``mpp`` whose centre lies on detected tissue."""
    slide = open_slide(path)
    if slide.mpp is None:
        raise BackendUnavailable(f"{path.name} has no mpp")
    mask = detect_tissue(slide, slide.mpp)
    scale = mpp / slide.mpp
    ys, xs = np.nonzero(mask.mask)
    for _ in range(count):
        k = int(rng.integers(len(xs)))
        cx, cy = (xs[k] + 0.5) * mask.downsample, (ys[k] + 0.5) * mask.downsample
        x0, y0 = int(cx - size * scale / 2), int(cy - size * scale / 2)
        yield read_at_scale(slide, max(x0, 0), max(y0, 0), size, scale)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--split", default="train", help="BRCA-M2C split whose images are used (labels ignored)")
    parser.add_argument("--wsi", type=Path, nargs="*", default=[], help="slides to sample tissue ROIs from")
    parser.add_argument("--rois-per-wsi", type=int, default=24)
    parser.add_argument("--size", type=int, default=320, help="ROI side in pixels at --mpp")
    parser.add_argument("--mpp", type=float, default=BRCA_MPP)
    parser.add_argument("--detector", choices=["model", "blob"], default="model")
    parser.add_argument("--min-nuclei", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    detect = model_detector(args.mpp) if args.detector == "model" else blob_detector
    writer = RoiWriter(args.out, args.mpp, args.size)
    rng = np.random.default_rng(args.seed)
    images = [(im.image, f"brca-m2c/{im.name}") for im in load_split(args.split)] if args.split else []
    for path in args.wsi:
        images += [
            (roi, f"{path.name}#{i}")
            for i, roi in enumerate(wsi_rois(path, args.mpp, args.size, args.rois_per_wsi, rng))
        ]
    for image, source in images:
        if min(image.shape[:2]) < args.size:
            continue
        xy_all = detect(image, args.mpp)
        for x, y in crops(image, args.size):
            inside = (
                (xy_all[:, 0] >= x)
                & (xy_all[:, 0] < x + args.size)
                & (xy_all[:, 1] >= y)
                & (xy_all[:, 1] < y + args.size)
            )
            if inside.sum() >= args.min_nuclei:
                crop = np.ascontiguousarray(image[y : y + args.size, x : x + args.size])
                writer.add(Roi(crop, xy_all[inside] - np.array([x, y], np.float32)), f"{source}@{x},{y}")
    index = writer.close()
    print(f"wrote {writer.count} ROIs to {index.parent}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
