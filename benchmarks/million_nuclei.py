"""Peak memory of a whole run on a synthetic slide with about a million nuclei (not part of CI: minutes).

    python benchmarks/million_nuclei.py OUT_DIR [--side 16384] [--embeddings]

Writes a 0.5 um/px dot slide (one dot per 16 px, see tests/runtime/dots.py), runs the full ``run_slide`` pipeline
with the dot engine (reads, decode, halo merge, shards, GeoJSON/CSV/overlay writers; with ``--embeddings`` also the
.h5ad of 192 float16 features per nucleus, as many as the shipped model's) and prints a JSON line with the nuclei,
wall time and peak RSS of the process (and the .h5ad's bytes per nucleus).
"""

import argparse
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "runtime"))

from dots import META, DotEngine, dot_positions, write_dot_slide  # noqa: E402

from muse_fast.config import InferConfig  # noqa: E402
from muse_fast.runtime.pipeline import run_slide  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--side", type=int, default=16384)
    parser.add_argument("--embeddings", action="store_true", help="also write the .h5ad (192 features per nucleus)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    slide = args.out / "million.tif"
    xy, cls = dot_positions(args.side, args.side, 16, seed=2)
    if not slide.exists():
        write_dot_slide(slide, args.side, args.side, xy, cls)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.time()
    cfg = InferConfig(
        out_dir=args.out, quiet=True, tissue_mask=False, batch_size=16, overwrite=True, embeddings=args.embeddings
    )
    summary = run_slide(slide, DotEngine(feature_dim=192 if args.embeddings else 3), META, cfg, {})
    h5ad = args.out / "million.h5ad"
    extra = {"h5ad_bytes_per_nucleus": round(h5ad.stat().st_size / summary.nuclei, 1)} if args.embeddings else {}
    print(
        json.dumps(
            {
                "dots": len(xy),
                "nuclei": summary.nuclei,
                "tiles": summary.tiles,
                "seconds": round(time.time() - start, 1),
                "peak_rss_mb_after_writing_slide": round(rss_before),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "embeddings": args.embeddings,
                **extra,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
