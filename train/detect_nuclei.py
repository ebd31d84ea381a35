"""Build an unlabelled ROI store with nucleus coordinates for pretraining.

    python -m train.detect_nuclei --out runs/rois [--split train,val,test] [--wsi SLIDE ...] [--folder DIR=MPP ...]
        [--detector hema|blob|model]

Sources: the images of BRCA-M2C splits (labels are *not* used; 0.5 um/px), random tissue ROIs from WSIs, and the
PNG/JPEG images of folders at a stated um/px (e.g. ``--folder ../shared/data/unlabeled=0.5``). Every
ROI covers ``--size`` pixels at ``--mpp`` (448 px at 0.5 um/px = 224 um, enough for 224-px views from 0.5 to 1.0
um/px); WSI ROIs keep the slide's native resolution where it is finer than ``--mpp`` (a 0.25 um/px scan gives
896-px ROIs), so pretraining sees real 40x views. Nuclei come, by default (``hema``), from peaks of the smoothed
haematoxylin optical density (:mod:`train.data.hema_nuclei`, label-free, run at each image's own resolution);
``blob`` is a Laplacian-of-Gaussian blob detector on the haematoxylin channel, ``model`` our detection model (run
at its own mpp; it learned nucleus positions from BRCA-M2C train labels, so its positions carry those labels into
pretraining). The detector is recorded in the store's ``index.json``.
For the LFoV stage build a store of larger fields from slides, e.g. ``--split "" --size 1024``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from muse_fast.errors import BackendUnavailable, ConfigError
from muse_fast.io.readers import open_slide
from muse_fast.io.resample import read_at_scale
from muse_fast.io.tissue import detect_tissue

from .config import one_line_errors
from .data.brca import BRCA_MPP, load_split
from .data.hema_nuclei import detect_haematoxylin_nuclei
from .data.rois import Roi, RoiWriter

DETECTORS = ("hema", "blob", "model")


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


def folder_images(spec: str) -> list[tuple[np.ndarray, float, str]]:
    """``DIR=MPP`` -> ``(RGB image, mpp, source name)`` for every PNG/JPEG/TIFF in DIR, in name order."""
    folder, _, mpp_text = spec.rpartition("=")
    try:
        mpp = float(mpp_text)
    except ValueError:
        mpp = -1.0
    if not folder or not mpp > 0:
        raise ConfigError(f"bad --folder '{spec}'; use DIR=MPP, e.g. ../shared/data/unlabeled=0.5")
    paths = sorted(p for p in Path(folder).glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".tif", ".tiff"))
    if not paths:
        raise ConfigError(f"--folder {folder} holds no PNG/JPEG/TIFF images")
    return [(np.asarray(Image.open(p).convert("RGB")), mpp, f"{Path(folder).name}/{p.name}") for p in paths]


def crops(image: np.ndarray, size: int) -> list[tuple[int, int]]:
    """Non-overlapping ``size`` crops covering the image (the last ones aligned to the far edges)."""
    h, w = image.shape[:2]
    ys = sorted({min(y, h - size) for y in range(0, max(h - size, 0) + 1, size)} | {max(h - size, 0)})
    xs = sorted({min(x, w - size) for x in range(0, max(w - size, 0) + 1, size)} | {max(w - size, 0)})
    return [(x, y) for y in ys for x in xs]


def roi_mpp(store_mpp: float, slide_mpp: float) -> float:
    """The store's mpp, or the slide's native mpp where the scan is finer (within 2%: no resampling for rounding)."""
    return slide_mpp if slide_mpp < store_mpp * 0.98 else store_mpp


def wsi_rois(path: Path, mpp: float, size: int, count: int, rng: np.random.Generator):
    """Random ROIs covering ``size`` px at ``mpp`` (at the slide's native resolution where finer), centred on tissue.

    Yields ``(image, image_mpp)``. A slide smaller than one ROI's field gives none (with a message)."""
    slide = open_slide(path)
    if slide.mpp is None:
        raise BackendUnavailable(f"{path.name} has no mpp")
    out_mpp = roi_mpp(mpp, slide.mpp)
    side = round(size * mpp / out_mpp)
    scale = out_mpp / slide.mpp  # level-0 pixels per ROI pixel
    extent = side * scale
    w, h = slide.level_dimensions[0]
    if extent > min(w, h):
        print(f"skipped {path.name}: {w}x{h} px is smaller than one ROI ({size} px at {mpp} um/px)")
        return
    mask = detect_tissue(slide, slide.mpp)
    ys, xs = np.nonzero(mask.mask)
    for _ in range(count):
        k = int(rng.integers(len(xs)))
        cx, cy = (xs[k] + 0.5) * mask.downsample, (ys[k] + 0.5) * mask.downsample
        x0 = int(np.clip(cx - extent / 2, 0, w - extent))
        y0 = int(np.clip(cy - extent / 2, 0, h - extent))
        yield read_at_scale(slide, x0, y0, side, scale), out_mpp


def detect_at(detect, image: np.ndarray, image_mpp: float, detect_mpp: float) -> np.ndarray:
    """Nuclei of ``image`` (at ``image_mpp``) found at ``detect_mpp``, in ``image``'s pixels (pixel-centre mapping)."""
    f = detect_mpp / image_mpp
    if abs(f - 1) < 1e-6:
        return detect(image, detect_mpp)
    side = round(image.shape[0] / f)
    small = np.asarray(Image.fromarray(image).resize((side, side), Image.BILINEAR))
    f = image.shape[0] / side  # exact ratio after rounding
    return ((detect(small, detect_mpp) + 0.5) * f - 0.5).astype(np.float32)


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--split", default="train", help="BRCA-M2C splits whose images are used, comma list (labels ignored)"
    )
    parser.add_argument(
        "--folder", action="append", default=[], help="DIR=MPP: images of a folder at MPP um/px; repeatable"
    )
    parser.add_argument("--wsi", type=Path, nargs="*", default=[], help="slides to sample tissue ROIs from")
    parser.add_argument("--rois-per-wsi", type=int, default=24)
    parser.add_argument("--size", type=int, default=448, help="ROI side in pixels at --mpp (sets each ROI's field)")
    parser.add_argument("--mpp", type=float, default=BRCA_MPP)
    parser.add_argument("--detector", choices=DETECTORS, default="hema", help="hema (default, label-free), blob, model")
    parser.add_argument("--min-nuclei", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    folders = [item for spec in args.folder for item in folder_images(spec)]
    detect = model_detector(args.mpp) if args.detector == "model" else blob_detector
    writer = RoiWriter(args.out, args.mpp, args.size, detector=args.detector)
    rng = np.random.default_rng(args.seed)
    splits = [s for s in args.split.split(",") if s]
    images = [(im.image, BRCA_MPP, f"brca-m2c/{im.name}") for s in splits for im in load_split(s)]
    images += folders
    for path in args.wsi:
        rois = wsi_rois(path, args.mpp, args.size, args.rois_per_wsi, rng)
        images += [(roi, mpp, f"{path.name}#{i}") for i, (roi, mpp) in enumerate(rois)]
    for image, mpp, source in images:
        side = round(args.size * args.mpp / mpp)
        if min(image.shape[:2]) < side:
            continue
        if args.detector == "hema":  # sizes in um: found at the image's own resolution
            xy_all = detect_haematoxylin_nuclei(image, mpp)
        else:
            xy_all = detect_at(detect, image, mpp, args.mpp)
        for x, y in crops(image, side):
            inside = (xy_all[:, 0] >= x) & (xy_all[:, 0] < x + side) & (xy_all[:, 1] >= y) & (xy_all[:, 1] < y + side)
            if inside.sum() >= args.min_nuclei:
                crop = np.ascontiguousarray(image[y : y + side, x : x + side])
                writer.add(Roi(crop, xy_all[inside] - np.array([x, y], np.float32), mpp), f"{source}@{x},{y}")
    index = writer.close()
    print(f"wrote {writer.count} ROIs to {index.parent}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
