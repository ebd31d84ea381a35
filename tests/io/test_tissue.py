"""Tissue detection keeps faint, pale and thin real tissue, and rejects glass, ink, borders and dust (style rule 21).

Scenes are built at 0.5 um/px from BRCA-M2C fields on glass, JPEG round-tripped like a scanner's tiles, written as a
TIFF and read back through ``detect_tissue``: the same low-resolution view the pipeline segments.
"""

import io
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageDraw

from muse_fast.io.readers import open_slide
from muse_fast.io.tissue import TissueMask, detect_tissue

MPP = 0.5  # BRCA-M2C fields are about 20x
SIDE = 464  # a field's side in pixels (232 um)
GLASS = (235, 235, 238)


@pytest.fixture(scope="module")
def fields(brca_dir: Path) -> dict[str, list[np.ndarray]]:
    """The four most lavender (haematoxylin-dominant) and four most pink BRCA-M2C fields, by mean red minus blue.

    Only fields that are stained throughout (no glass-like pixel at 8 um/px) qualify, so each one's area is tissue.
    """
    scored = []
    for path in sorted((brca_dir / "images").glob("*.png")):
        rgb = np.asarray(Image.open(path).convert("RGB"))[:SIDE, :SIDE]
        if rgb.shape[:2] != (SIDE, SIDE):
            continue
        small = np.asarray(Image.fromarray(rgb).resize((SIDE // 16, SIDE // 16), Image.BILINEAR)).astype(int)
        if (small.max(-1) - small.min(-1) < 20).any():
            continue
        scored.append((float(rgb[..., 0].mean() - rgb[..., 2].mean()), path.name, rgb))
    scored.sort(key=lambda s: s[0])
    lavender, pink = scored[:4], scored[-4:]
    assert lavender[-1][0] < -30 and pink[0][0] > 20, "expected both stain balances among BRCA-M2C fields"
    return {"lavender": [s[2] for s in lavender], "pink": [s[2] for s in pink]}


def glass(h: int, w: int, colour=GLASS, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.array(colour, float) + rng.normal(0, 2, (h, w, 3)), 0, 255).astype(np.uint8)


def detect(rgb: np.ndarray, tmp_path: Path) -> tuple[TissueMask, np.ndarray]:
    """JPEG round trip (as scanned), write a 0.5 um/px TIFF, detect tissue; also the mask at full resolution."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=85)
    path = tmp_path / "scene.tif"
    tifffile.imwrite(path, np.asarray(Image.open(buf)), tile=(256, 256), compression="zlib", resolution=(2e4, 2e4),
                     resolutionunit="CENTIMETER", metadata=None)  # fmt: skip
    slide = open_slide(path)
    assert slide.mpp == pytest.approx(MPP)
    mask = detect_tissue(slide, slide.mpp)
    full = Image.fromarray(mask.mask).resize((rgb.shape[1], rgb.shape[0]), Image.NEAREST)
    return mask, np.asarray(full)


def place(img: np.ndarray, field: np.ndarray, y: int, x: int) -> tuple[int, int, int, int]:
    """Paste a field at (y, x); its (y, x, h, w) box."""
    h, w = field.shape[:2]
    img[y : y + h, x : x + w] = field
    return y, x, h, w


def far_from(boxes: list[tuple[int, int, int, int]], shape: tuple[int, ...], um: float) -> np.ndarray:
    """Pixels farther than ``um`` from every (y, x, h, w) box."""
    near = np.zeros(shape[:2], bool)
    r = int(um / MPP)
    for y, x, h, w in boxes:
        near[max(y - r, 0) : y + h + r, max(x - r, 0) : x + w + r] = True
    return ~near


@pytest.mark.parametrize("colour", [GLASS, (246, 238, 220)], ids=["grey-white glass", "yellowish glass"])
def test_pink_and_pale_lavender_fields_are_all_kept(fields, tmp_path, colour):
    """The issue's mosaic: eosin-rich and pale haematoxylin-dominant fields side by side, and two fields alone."""
    img = glass(3 * SIDE + 1200, 5 * SIDE + 800, colour)
    lav, pink = fields["lavender"], fields["pink"]
    block = [lav[0], pink[0], lav[1], pink[1], pink[2], lav[2], pink[3], lav[3]]  # 2 x 4, touching
    boxes = [place(img, f, 400 + (i // 4) * SIDE, 400 + (i % 4) * SIDE) for i, f in enumerate(block)]
    boxes += [place(img, lav[3][::-1], 2 * SIDE + 800, 400), place(img, pink[3][::-1], 2 * SIDE + 800, SIDE + 1000)]
    _, full = detect(img, tmp_path)
    kept = [full[y : y + h, x : x + w].mean() for y, x, h, w in boxes]
    assert min(kept) >= 0.98, f"share of each field inside the mask: {np.round(kept, 3)}"
    glass_px = far_from(boxes, img.shape, 0)
    assert full[glass_px].mean() < 0.08  # only the margin around tissue
    assert full[far_from(boxes, img.shape, 32)].sum() == 0  # nothing on open glass


@pytest.mark.parametrize("width_um", [60, 30])
def test_thin_strand_beside_a_tissue_block_is_kept(fields, tmp_path, width_um):
    """A strand cut from real fields (pale and pink pieces end to end), like the one left of CMU-1-Small-Region."""
    img = glass(2 * SIDE + 1000, 2 * SIDE + 2400)
    lav, pink = fields["lavender"], fields["pink"]
    for i, field in enumerate([pink[0], pink[1], lav[0], lav[1]]):
        place(img, field, 300 + (i // 2) * SIDE, 1800 + (i % 2) * SIDE)
    w = int(width_um / MPP)
    y = 300 + SIDE - w // 2
    for k, field in enumerate([lav[2], pink[2], lav[3]]):
        place(img, field[100 : 100 + w, : SIDE // 2], y, 200 + k * SIDE // 2)
    _, full = detect(img, tmp_path)
    strand = full[y : y + w, 200 : 200 + 3 * SIDE // 2]
    assert strand.mean() >= 0.98, f"{strand.mean():.3f} of the strand inside the mask"
    assert full[far_from([(y, 200, w, 3 * SIDE // 2), (300, 1800, 2 * SIDE, 2 * SIDE)], img.shape, 32)].sum() == 0


def test_faintly_stained_fields_are_kept(fields, tmp_path):
    """Fields at 30% of their stain (blended with glass), pale and pink."""
    img = glass(SIDE + 800, 2 * SIDE + 1200)
    boxes = [(400, 400, SIDE, SIDE), (400, SIDE + 800, SIDE, SIDE)]
    for (y, x, h, w), field in zip(boxes, [fields["lavender"][1], fields["pink"][0]]):
        img[y : y + h, x : x + w] = (0.3 * field + 0.7 * img[y : y + h, x : x + w]).astype(np.uint8)
    _, full = detect(img, tmp_path)
    kept = [full[y : y + h, x : x + w].mean() for y, x, h, w in boxes]
    assert min(kept) >= 0.98, f"share of each faint field inside the mask: {np.round(kept, 3)}"


def _artefacts(kind: str) -> np.ndarray:
    img = glass(3000, 4000)
    im = Image.fromarray(img)
    draw = ImageDraw.Draw(im)
    inks = {"blue pen": (40, 60, 160), "light blue pen": (70, 110, 200), "green pen": (40, 150, 90)}
    inks |= {"black marker": (30, 30, 40), "purple-black marker": (45, 30, 55)}
    if kind in inks:
        for y in (500, 1500, 2500):  # 100 um wide strokes, each about 2 mm long
            draw.line([(300, y), (1800, y + 300), (3700, y - 100)], fill=inks[kind], width=200)
    elif kind == "dust":
        rng = np.random.default_rng(1)
        for cx, cy, r, g in zip(rng.uniform(0, 4000, 60), rng.uniform(0, 3000, 60), rng.uniform(5, 40, 60),
                                rng.uniform(40, 120, 60)):  # fmt: skip
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(int(g), int(g), int(g) + 3))
    img = np.asarray(im).copy()
    if kind == "scanner border":
        rng = np.random.default_rng(2)
        img[:, :600] = np.clip(8 + rng.normal(0, 3, (3000, 600, 3)), 0, 255)
        img[:200] = np.clip(8 + rng.normal(0, 3, (200, 4000, 3)), 0, 255)
    if kind == "blank slide":
        img[:] = 255
    return img


@pytest.mark.parametrize(
    "kind",
    ["blue pen", "light blue pen", "green pen", "black marker", "purple-black marker", "scanner border", "dust",
     "glass only", "blank slide"],
)  # fmt: skip
def test_ink_borders_dust_and_empty_glass_are_not_tissue(tmp_path, kind):
    mask, _ = detect(_artefacts(kind), tmp_path)
    assert mask.mask.sum() == 0, f"{kind}: {mask.mask.mean():.4f} of the view marked as tissue"


def test_pen_beside_tissue_is_dropped_and_tissue_kept(fields, tmp_path):
    img = _artefacts("blue pen")
    y, x, h, w = place(img, fields["lavender"][0], 1900, 2400)
    _, full = detect(img, tmp_path)
    assert full[y : y + h, x : x + w].mean() >= 0.98
    assert full[far_from([(y, x, h, w)], img.shape, 32)].sum() == 0


def test_cmu_small_region_keeps_the_strand_and_the_fragment(cmu_svs):
    """The thin strand on the left and the small fragment at the upper right, located by eye on a 2 um/px view."""
    slide = open_slide(cmu_svs)
    mask = detect_tissue(slide, slide.mpp)
    to_l0 = 2.0 / slide.mpp  # level-0 pixels per pixel of the 2 um/px view
    strand = [(35, 283), (60, 279), (85, 272), (110, 266), (135, 261), (160, 262), (185, 270)]
    for x, y in strand + [(511, 156)]:
        r, c = int(y * to_l0 / mask.downsample), int(x * to_l0 / mask.downsample)
        assert mask.mask[r, c], f"tissue at ({x}, {y}) of the 2 um/px view is outside the mask"
    assert mask.fraction_in(0, 600 * to_l0, 100 * to_l0, 740 * to_l0) == 0  # glass at the lower left
    assert 0.3 < mask.mask.mean() < 0.6
