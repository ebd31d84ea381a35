"""How many labelled nuclei the detection geometry itself can return: decode the ideal training target.

    python -m train.geometry --split val [--crowd 1.0] [--data nucls] [--min-distance 1]

The ideal centre map of a set of nuclei (:func:`train.targets.centre_targets`: a Gaussian of ``sigma`` cells at each
nucleus' cell, offsets to the nucleus inside it) goes through the same peak finding and placement as inference
(:func:`muse_fast.kernels.peaks.find_peaks`, window ``2 min_distance + 1`` cells; :func:`positions`). A nucleus lost
here is lost by the geometry (two nuclei in one cell, or in neighbouring cells under one peak window), whatever the
network learns. Recall is reported per nearest-neighbour spacing, at the model's 0.5 um/px.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from muse_fast.kernels.nuclei_decode import positions
from muse_fast.kernels.peaks import find_peaks

from .config import one_line_errors
from .data.brca import BRCA_MPP, CLASSES, LabelledImage, load_split
from .data.nucls import NUCLS_CLASSES, NUCLS_MPP, load_nucls
from .perturb import Perturbation, stress_labelled
from .recall import detection_report, format_report_table
from .targets import centre_targets


def decode_ideal_target(
    xy: np.ndarray, size: int, stride: int = 4, sigma: float = 1.0, threshold: float = 0.3, min_distance: int = 1
) -> np.ndarray:
    """Nuclei ``(x, y)`` decoded from the ideal target of ``xy`` on a ``size``-px square (a multiple of ``stride``)."""
    heat, offset, _ = centre_targets(xy, size, stride, sigma)
    peaks = find_peaks(torch.from_numpy(heat)[None], threshold, min_distance, max_points=len(xy) + 1, impl="reference")
    n = int(peaks.counts[0])
    return positions(peaks.yx[:, :n], torch.from_numpy(offset)[None], stride)[0].numpy()


def geometry_report(
    images: list[LabelledImage], image_mpp: float, names: tuple[str, ...], model_mpp: float = 0.5, **decode
) -> dict:
    """:func:`detection_report` of the ideal targets' decoded nuclei against the labels, at ``model_mpp``."""
    f = image_mpp / model_mpp
    rows = []
    for im in images:
        xy = (im.xy.astype(np.float64) + 0.5) * f - 0.5
        stride = decode.get("stride", 4)
        size = int(np.ceil((max(im.image.shape[:2]) * f + 1) / stride)) * stride
        rows.append((xy, im.labels, decode_ideal_target(xy, size, **decode)))
    return detection_report(rows, model_mpp, names)


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["brca", "nucls"], default="brca")
    parser.add_argument("--split", default="val", choices=["train", "val", "test"], help="BRCA-M2C split")
    parser.add_argument("--crowd", type=float, default=0.0, help="add the crowding stress test (train.perturb)")
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument("--sigma", type=float, default=1.0, help="target Gaussian, in cells")
    parser.add_argument("--min-distance", type=int, default=1, help="peak window half-size, in cells")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.data == "nucls":
        images, mpp, names = load_nucls(), NUCLS_MPP, NUCLS_CLASSES
    else:
        images, mpp, names = load_split(args.split), BRCA_MPP, CLASSES
    if args.crowd:
        images = [stress_labelled(im, Perturbation(crowd=args.crowd), i, mpp) for i, im in enumerate(images)]
    decode = {"stride": args.stride, "sigma": args.sigma, "min_distance": args.min_distance}
    report = geometry_report(images, mpp, names, **decode)
    name = f"{args.data} {args.split if args.data == 'brca' else 'all'}" + (
        f" crowd {args.crowd}" if args.crowd else ""
    )
    print(
        f"ideal targets decoded at stride {args.stride}, sigma {args.sigma} cells, window {2 * args.min_distance + 1}"
    )
    print(format_report_table({name: report}))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
