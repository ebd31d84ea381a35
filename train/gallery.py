"""Old-vs-new gallery: two weights files on unlabelled tissue, overlays side by side with counts per class.

    python -m train.gallery --old OLD.pt --new NEW.pt --out gallery/    # default: the shipped weights as --old

Sources: the tiles of ``unlabeled/`` (scale not recorded; assumed 0.5 um/px, see that folder's README) and a
``--wsi-side`` field from the centre of each slide in ``wsi/`` (at the scale its metadata records). Every image is
resized to each model's mpp, predicted with ``muse-fast``'s tiled path, and drawn at the source's pixels. Writes
``OUT/<source>.png`` (old left, new right, one dot per nucleus in its class colour), ``OUT/gallery.json`` (counts
per class and the scale of every source) and ``OUT/index.html``; all of them appear together when the run ends.
Nobody annotated these images: the gallery is for looking, not for scores.
"""

from __future__ import annotations

import argparse
import html
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from muse_fast.errors import ConfigError, InputError
from muse_fast.io.readers import open_slide
from muse_fast.io.resample import read_at_scale
from muse_fast.model.weights import load_weights
from muse_fast.output.atomic import StagedFiles
from muse_fast.post.classes import class_colour
from muse_fast.post.decode import DecodeConfig
from muse_fast.runtime.engines import TorchEngine
from muse_fast.runtime.predict import predict_image

from .config import one_line_errors
from .data.paths import shared_data_dir
from .data.robust import rescale

UNLABELED_MPP = 0.5  # not recorded; adipocyte and nucleus sizes say 20x (unlabeled/README.md)


@dataclass
class Source:
    name: str
    image: np.ndarray  # uint8 [H, W, 3] at ``mpp``
    mpp: float
    scale_from: str  # where ``mpp`` comes from


def gallery_sources(data: Path, wsi_side: int = 1024, out_mpp: float = 0.5) -> list[Source]:
    """The unlabelled tiles (assumed 0.5 um/px) and a ``wsi_side``-px field at ``out_mpp`` from each slide's centre."""
    sources = []
    for path in sorted((data / "unlabeled").glob("*.png")):
        sources.append(Source(path.stem, np.asarray(Image.open(path).convert("RGB")), UNLABELED_MPP, "assumed"))
    for path in sorted((data / "wsi").glob("*")):
        if path.suffix.lower() not in (".svs", ".tif", ".tiff", ".ndpi", ".mrxs"):
            continue
        slide = open_slide(path)
        if slide.mpp is None:
            continue
        w, h = slide.level_dimensions[0]
        scale = max(out_mpp / slide.mpp, 1.0)  # never upsample a coarser slide: read it at its own resolution
        side = int(min(wsi_side, w / scale, h / scale))
        x0, y0 = int((w - side * scale) / 2), int((h - side * scale) / 2)
        image = read_at_scale(slide, x0, y0, side, scale)
        sources.append(Source(path.name, image, slide.mpp * scale, f"slide metadata ({slide.mpp:.4g} um/px)"))
    if not sources:
        raise InputError(f"no images under {data}/unlabeled or {data}/wsi; set MUSE_DATA or pass --data")
    return sources


def predict_source(model, meta, source: Source) -> tuple[np.ndarray, np.ndarray]:
    """Nuclei ``(xy in the source's pixels, class ids)`` of one loaded weights file on one source."""
    factor = source.mpp / meta.mpp
    image, _ = rescale(source.image, np.zeros((0, 2), np.float32), factor)
    nuc = predict_image(TorchEngine(model), image, meta.tile_size, 32, DecodeConfig())
    xy = (nuc.xy + 0.5) / factor - 0.5 if factor != 1 else nuc.xy
    return np.asarray(xy), np.asarray(nuc.class_id)


def draw(image: np.ndarray, xy: np.ndarray, class_id: np.ndarray, classes: tuple[str, ...], title: str) -> Image.Image:
    """The image with one dot per nucleus in its class colour, under a one-line title."""
    panel = Image.new("RGB", (image.shape[1], image.shape[0] + 18), "white")
    panel.paste(Image.fromarray(image), (0, 18))
    pen = ImageDraw.Draw(panel)
    pen.text((3, 3), title, fill=(0, 0, 0))
    colours = [class_colour(name, i) for i, name in enumerate(classes)]
    for (x, y), c in zip(xy, class_id):
        pen.ellipse((x - 2.5, y + 18 - 2.5, x + 2.5, y + 18 + 2.5), fill=colours[int(c)], outline=(255, 255, 255))
    return panel


def counts(class_id: np.ndarray, classes: tuple[str, ...]) -> dict[str, int]:
    return {name: int((class_id == i).sum()) for i, name in enumerate(classes)}


def build_gallery(old: Path | None, new: Path, sources: list[Source], out: Path, loaded: dict | None = None) -> dict:
    """Overlays (old | new), ``gallery.json`` and ``index.html`` under ``out``, renamed into place together.

    ``loaded``: ``{"old": (model, meta), "new": (model, meta)}`` when the caller has loaded the files already."""
    rows = []
    loaded = loaded or {"old": load_weights(old), "new": load_weights(new)}
    with StagedFiles() as staged:
        for source in sources:
            panels, row = [], {"source": source.name, "mpp": source.mpp, "scale_from": source.scale_from}
            for label, weights in (("old", old), ("new", new)):
                model, meta = loaded[label]
                xy, cls = predict_source(model, meta, source)
                classes = tuple(meta.classes)
                row[label] = {"weights": str(weights or "shipped"), "total": len(xy), "per_class": counts(cls, classes)}
                title = f"{label}: {len(xy)} nuclei " + " ".join(f"{k} {v}" for k, v in row[label]["per_class"].items())
                panels.append(draw(source.image, xy, cls, classes, title))
            pair = Image.new("RGB", (sum(p.width for p in panels) + 8, panels[0].height), "white")
            pair.paste(panels[0], (0, 0))
            pair.paste(panels[1], (panels[0].width + 8, 0))
            row["png"] = f"{source.name}.png"
            with staged.open(out / row["png"], "wb") as fh:
                pair.save(fh, format="PNG")
            rows.append(row)
            print(f"{source.name} ({source.mpp:.3g} um/px): old {row['old']['total']}, new {row['new']['total']}")
        result = {"old": str(old or "shipped"), "new": str(new), "sources": rows}
        with staged.open(out / "gallery.json", "w") as fh:
            fh.write(json.dumps(result, indent=2) + "\n")
        with staged.open(out / "index.html", "w") as fh:
            fh.write(index_html(result))
        staged.commit()
    return result


def index_html(result: dict) -> str:
    """One table row per source: scale, counts per class of both files, and the side-by-side overlay."""
    esc = html.escape
    lines = [
        "<!doctype html><meta charset='utf-8'><title>muse-fast gallery</title>",
        f"<h1>old: {esc(result['old'])} | new: {esc(result['new'])}</h1>",
        "<p>Unlabelled images: for looking, not for scores. Scale per source as assumed or recorded.</p>",
        "<table border=1 cellpadding=4><tr><th>source</th><th>um/px</th><th>old</th><th>new</th></tr>",
    ]
    for r in result["sources"]:
        cells = [
            f"{esc(r[k]['weights'])}<br>{r[k]['total']} nuclei<br>"
            + "<br>".join(f"{esc(c)}: {n}" for c, n in r[k]["per_class"].items())
            for k in ("old", "new")
        ]
        lines.append(
            f"<tr><td>{esc(r['source'])}</td><td>{r['mpp']:.3g} ({esc(r['scale_from'])})</td>"
            f"<td>{cells[0]}</td><td>{cells[1]}</td></tr>"
            f"<tr><td colspan=4><img src='{esc(r['png'])}' style='max-width:100%'></td></tr>"
        )
    lines.append("</table>")
    return "\n".join(lines) + "\n"


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, default=None, help="weights drawn on the left (default: the shipped file)")
    parser.add_argument("--new", type=Path, required=True, help="weights drawn on the right")
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNGs, gallery.json and index.html")
    parser.add_argument("--data", type=Path, default=None, help="folder holding unlabeled/ and wsi/ (default: shared)")
    parser.add_argument("--wsi-side", type=int, default=1024, help="side of the field read from each slide, px")
    parser.add_argument("--only", default="", help="comma list of source names to draw (default: all)")
    args = parser.parse_args(argv)
    if args.wsi_side < 64:
        raise ConfigError(f"--wsi-side must be at least 64 px, got {args.wsi_side}")
    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out {args.out} is not a folder; pass a new or existing folder")
    sources = gallery_sources(args.data or shared_data_dir(), args.wsi_side)
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {s.name for s in sources}
        if unknown:
            raise ConfigError(
                f"--only {', '.join(sorted(unknown))} not found; sources: {', '.join(s.name for s in sources)}"
            )
        sources = [s for s in sources if s.name in wanted]
    loaded = {"new": load_weights(args.new), "old": load_weights(args.old)}  # refused before anything is written
    args.out.mkdir(parents=True, exist_ok=True)
    build_gallery(args.old, args.new, sources, args.out, loaded)
    print(f"wrote {args.out / 'index.html'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
