"""The overlay PNG: class colours that stand out on H&E for colour-blind readers too, and a legend with the counts."""

import itertools

import numpy as np
import pytest
from dots import META, DotEngine
from PIL import Image
from skimage.color import deltaE_ciede2000, rgb2lab

from muse_fast.config import InferConfig
from muse_fast.io.readers import open_slide
from muse_fast.output.overlay import Overlay
from muse_fast.post.classes import BRCA_M2C_CLASSES, class_colour
from muse_fast.runtime.pipeline import run_slide

# Machado et al. (2009), severity 1, on linear RGB: what readers with each colour-vision deficiency see
CVD = {
    "normal": np.eye(3),
    "protanopia": np.array(
        [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]]
    ),
    "deuteranopia": np.array(
        [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]]
    ),
    "tritanopia": np.array(
        [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602], [0.004733, 0.691367, 0.313900]]
    ),
}


def _seen(rgb, deficiency: str) -> np.ndarray:
    """Lab of sRGB ``rgb`` (0-255) as seen with ``deficiency``."""
    c = np.asarray(rgb, float) / 255
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    seen = np.clip(CVD[deficiency] @ linear, 0, 1)
    srgb = np.where(seen <= 0.0031308, 12.92 * seen, 1.055 * seen ** (1 / 2.4) - 0.055)
    return rgb2lab(srgb.reshape(1, 1, 3))[0, 0]


def _difference(a, b, deficiency: str = "normal") -> float:
    return float(deltaE_ciede2000(_seen(a, deficiency), _seen(b, deficiency)))


def _stain_colours(brca_dir, n_images: int = 10) -> dict[str, np.ndarray]:
    """Median colour of the labelled nuclei of each BRCA-M2C class (3x3 px at each dot) and of all pixels."""
    names = (brca_dir / "brca_ds_test.txt").read_text().split()[:n_images]
    nuclei, pixels = {c: [] for c in BRCA_M2C_CLASSES}, []
    for name in names:
        image = np.asarray(Image.open(brca_dir / "images" / name).convert("RGB"))
        labels = np.loadtxt(brca_dir / "labels" / f"{name[:-4]}_gt_class_coords.txt", dtype=int, ndmin=2)
        for y, x, c in labels:
            nuclei[BRCA_M2C_CLASSES[c - 1]].append(image[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2].reshape(-1, 3))
        pixels.append(image.reshape(-1, 3))
    medians = {f"{c} nuclei": np.median(np.concatenate(v), 0) for c, v in nuclei.items()}
    return {**medians, "all pixels": np.median(np.concatenate(pixels), 0)}


def test_class_colours_stand_out_on_real_h_and_e(brca_dir):
    """Every class colour is far (CIEDE2000 >= 35) from BRCA-M2C's stained nuclei and from its typical pixel."""
    stains = _stain_colours(brca_dir)
    for i, name in enumerate(BRCA_M2C_CLASSES):
        for stain, rgb in stains.items():
            assert _difference(class_colour(name, i), rgb) >= 35, f"{name} is hard to see on {stain} ({rgb})"


def test_class_colours_stay_apart_for_colour_blind_readers():
    colours = [class_colour(name, i) for i, name in enumerate(BRCA_M2C_CLASSES)]
    for deficiency in CVD:
        for a, b in itertools.combinations(colours, 2):
            assert _difference(a, b, deficiency) >= 15, f"{a} and {b} look alike with {deficiency}"


def test_overlay_has_a_legend_with_the_counts_of_the_run(small_dots, tmp_path):
    cfg = InferConfig(out_dir=tmp_path, quiet=True, tissue_mask=False)
    summary = run_slide(small_dots, DotEngine(), META, cfg, {"engine": "dots"})
    png = np.asarray(Image.open(tmp_path / "dots.overlay.png").convert("RGB"))
    slide = open_slide(small_dots, "auto", None)
    overlay = Overlay(slide, META.classes)
    table = np.genfromtxt(tmp_path / "dots.csv", delimiter=",", names=True, dtype=None, encoding=None)
    overlay.add_points(np.stack([table["x"], table["y"]], 1), table["class_id"])
    counts = [f"{name}  {summary.per_class[name]:,}" for name in META.classes]
    assert overlay.legend_lines() == [*counts, f"{summary.nuclei:,} nuclei"]
    assert np.array_equal(png, np.asarray(overlay.image))  # the file is this overlay, legend included
    thumb_h = overlay.thumbnail.height
    legend = png[thumb_h:]
    assert legend.shape[0] > 0 and png.shape[1] >= overlay.thumbnail.width
    rows = legend.shape[0] / len(overlay.legend_lines())
    for i, colour in enumerate(overlay.colours):  # each class's row starts with a dot of its colour, then text
        row = legend[int(i * rows) : int((i + 1) * rows)]
        assert (row == colour).all(-1).sum() >= 20, f"no {META.classes[i]} dot in legend row {i}"
        assert (row.max(-1) < 100).sum() >= 20, f"no text in legend row {i}"


def test_classes_differ_by_marker_shape_too_so_greyscale_and_colour_blind_readers_can_tell_them_apart():
    """Each of the first four classes is drawn with its own shape (same colour here, so only the shape differs)."""
    from PIL import ImageDraw

    from muse_fast.output.overlay import MARKERS, draw_marker

    masks = []
    for shape in MARKERS:
        image = Image.new("RGB", (40, 40), (0, 0, 0))
        draw_marker(ImageDraw.Draw(image), 20, 20, 8, shape, (255, 255, 255))
        mask = np.asarray(image).any(-1)  # fill and rim
        assert mask[20, 20] and 100 < mask.sum() < 500  # centred on the nucleus, about the same size
        masks.append(mask)
    for a, b in itertools.combinations(masks, 2):
        assert (a ^ b).sum() > 30  # clearly different outlines


def _overlay(path, classes: tuple[str, ...]) -> Overlay:
    slide = open_slide(path, "auto", None)
    try:
        return Overlay(slide, classes)
    finally:
        slide.close()


def _points(rng, n: int, w: int, h: int, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Random level-0 points, some off the slide's edges, and clusters where markers of different classes overlap."""
    xy = rng.uniform([-20, -20], [w + 20, h + 20], (n, 2))
    cluster = rng.uniform([0, 0], [w, h], (1, 2)) + rng.normal(0, 3, (n // 4, 2))
    xy = np.concatenate([xy, cluster, [[0.5, 0.5], [w - 0.5, h - 0.5], [2.5, 7.5]]])  # halves: rounded up
    return xy, rng.integers(0, n_classes, len(xy))


def _paste_paths() -> list:
    """The fast paths: the native library's (skipped with the reason where it is not built) and numpy's."""
    from muse_fast.kernels import native

    reason = native.unavailable_reason("cpu")
    return [pytest.param(True, id="native", marks=pytest.mark.skipif(reason is not None, reason=reason or "")),
            pytest.param(False, id="numpy")]  # fmt: skip


@pytest.mark.parametrize("native", _paste_paths())
def test_stamped_markers_are_what_one_pil_call_per_marker_draws(cmu_svs, small_dots, native):
    """Each fast path against the reference, on a large slide (thumbnail scale > 1) and a small one (scale 1), with
    six classes (shapes repeat), overlaps between classes, points on the edges and outside, and several batches."""
    rng = np.random.default_rng(7)
    classes = ("a", "b", "c", "d", "e", "f")
    for path in (cmu_svs, small_dots):
        fast, reference = _overlay(path, classes), _overlay(path, classes)
        h, w = fast.pixels.shape[0] * fast.scale, fast.pixels.shape[1] * fast.scale
        blank = fast.pixels.copy()
        for _ in range(3):
            xy, labels = _points(rng, 400, w, h, len(classes))
            fast.add_points(xy, labels, native=native)
            reference.add_points_reference(xy, labels)
        assert (fast.pixels != blank).any(-1).sum() > 1000  # markers were drawn
        np.testing.assert_array_equal(fast.pixels, reference.pixels)
        np.testing.assert_array_equal(fast.counts, reference.counts)
        fast.add_points(np.zeros((0, 2)), np.zeros(0, np.int64), native=native)  # an empty batch changes nothing
        np.testing.assert_array_equal(fast.pixels, reference.pixels)


@pytest.mark.parametrize("native", _paste_paths())
def test_native_paste_writes_into_a_thumbnail_that_is_a_view(small_dots, native):
    """After the reference path or an unreadable region the pixels may be a view of a larger array: the paste still
    lands in the overlay's own pixels, as the reference path draws it."""
    fast, reference = _overlay(small_dots, ("a", "b")), _overlay(small_dots, ("a", "b"))
    xy, labels = np.array([[10.0, 10.0], [30.0, 12.0]]), np.array([0, 1])
    fast.add_points_reference(xy[:1], labels[:1])  # leaves a sliced view as the pixels
    reference.add_points_reference(xy[:1], labels[:1])
    fast.add_points(xy[1:], labels[1:], native=native)
    reference.add_points_reference(xy[1:], labels[1:])
    np.testing.assert_array_equal(fast.pixels, reference.pixels)


@pytest.mark.parametrize("native", _paste_paths())
def test_a_later_marker_covers_an_earlier_one(small_dots, native):
    overlay = _overlay(small_dots, ("a", "b"))
    overlay.add_points(np.array([[50.0, 50.0], [50.0, 50.0]]), np.array([0, 1]), native=native)
    centre = overlay.pixels[50, 50]
    assert tuple(centre) == tuple(overlay.colours[1]) != tuple(overlay.colours[0])


def test_a_class_id_outside_the_classes_is_an_error_on_every_path(small_dots):
    overlay = _overlay(small_dots, ("a", "b"))
    before = overlay.pixels.copy()
    adds = (lambda xy, c: overlay.add_points(xy, c, native=False), overlay.add_points, overlay.add_points_reference)
    for add in adds:
        with pytest.raises(ValueError, match="outside the 2 classes"):
            add(np.array([[5.0, 5.0], [9.0, 9.0]]), np.array([0, 2]))
    np.testing.assert_array_equal(overlay.pixels, before)  # nothing drawn before the error


def test_the_native_paste_refuses_a_class_outside_its_table(small_dots):
    """The library checks every label before it changes a pixel (the Python side checks first; this is its guard)."""
    from muse_fast.kernels import native

    if native.unavailable_reason("cpu"):
        pytest.skip(native.unavailable_reason("cpu"))
    overlay = _overlay(small_dots, ("a", "b"))
    before = overlay.pixels.copy()
    with pytest.raises(RuntimeError, match="class id outside"):
        overlay._paste_native(np.array([[5, 5], [9, 9]]), np.array([0, 2]))
    np.testing.assert_array_equal(overlay.pixels, before)


def test_many_classes_never_share_a_colour():
    """Four or more classes without recorded colours (the cycle has three), and recorded colours that repeat."""
    from muse_fast.post.classes import ClassName, class_colours

    names = [f"class {i}" for i in range(12)]
    colours = class_colours(names)
    assert len(set(colours)) == 12 and all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in colours)
    assert colours[:3] == [class_colour(n, i) for i, n in enumerate(names[:3])]  # as before where none repeats
    assert class_colours(BRCA_M2C_CLASSES) == [class_colour(n, i) for i, n in enumerate(BRCA_M2C_CLASSES)]
    for n, apart in ((11, 15), (22, 8)):  # not only not equal: apart (CIEDE2000; the palette runs short of room)
        many = class_colours([f"k{i}" for i in range(n)])
        assert min(_difference(a, b) for a, b in itertools.combinations(many, 2)) >= apart, n
    assert class_colours([f"c{i}" for i in range(17)] + ["tumor"])[-1] == class_colour("tumor", 0)  # keeps its own
    recorded = [ClassName("a", (9, 9, 9)), ClassName("b", (9, 9, 9)), ClassName("c", (1, 2, 3))]
    assert class_colours(recorded) == [(9, 9, 9), class_colour("b", 1), (1, 2, 3)]  # b: its default


def test_class_names_beyond_ascii_are_drawn_with_their_letters():
    """Pillow's own font has only ASCII: a legend with "Épithélium" or "Entzündung" takes a system font that has
    those letters (drawn unlike the font's box for a missing one); ASCII legends keep Pillow's font."""
    from PIL import ImageDraw

    from muse_fast.output.fonts import SYSTEM_FONTS, _system_font, text_font

    if not any(_system_font(name, 14) for name in SYSTEM_FONTS):
        pytest.skip("no system font (DejaVu Sans, Noto Sans, Liberation Sans, Arial) on this machine")

    def drawn(font, text):
        im = Image.new("L", (60, 24), 0)
        ImageDraw.Draw(im).text((2, 2), text, font=font, fill=255)
        return np.asarray(im)

    font = text_font(14, ["Épithélium  12", "Entzündung  3"])
    missing = drawn(font, "\ue000")  # a private-use character: no font has it
    for letter in "Ééü":  # the letters of the texts
        assert not (drawn(font, letter) == missing).all(), f"{letter} is drawn as a box"
    assert text_font(14, ["tumor  12"]) is not font and text_font(None, ["tumor"]) is None
    assert text_font(None, ["Épithélium"]).size == 11


def test_a_class_name_cannot_reorder_the_legend_text():
    """A right-to-left override in a class name would draw "evil  12" as "21  live": it is written out instead."""
    overlay = Overlay.__new__(Overlay)  # the legend's text needs only the classes and counts
    overlay.classes, overlay.counts = ("\u202eevil", "tumor"), np.array([12, 3])
    assert overlay.legend_lines()[0] == "\\u202eevil  12" and "\u202e" not in "".join(overlay.legend_lines())
