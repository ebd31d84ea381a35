"""Robustness augmentations, perturbed evaluation and flip TTA: exact geometry and stated invariants."""

import numpy as np
import pytest
import torch

from muse_fast.errors import ConfigError
from muse_fast.model.registry import DenseOutputs
from muse_fast.runtime.tta import FlipTTAEngine
from muse_fast.train.data.augment import random_crop
from muse_fast.train.data.robust import (
    gaussian_blur,
    hed_jitter,
    random_blur,
    random_jpeg,
    random_scaled_crop,
    rescale,
)
from muse_fast.train.perturb import Perturbation, parse_perturbation, perturb_image, to_original_pixels


def _gradient(h=300, w=280):
    """R encodes x, G encodes y (half a level per pixel), so positions can be read back from colours."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 0.5, yy * 0.5, np.full_like(xx, 128)], -1).astype(np.uint8)


def test_hed_jitter_is_identity_at_zero_and_changes_stain_otherwise():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 16, 16) * 200 + 20
    assert torch.equal(hed_jitter(x, g, 0.0), x)
    y = hed_jitter(x, torch.Generator().manual_seed(1), 0.2)
    assert y.shape == x.shape and 0 <= y.min() and y.max() <= 255
    assert (y - x).abs().mean() > 1  # a visible stain shift
    assert torch.equal(y, hed_jitter(x, torch.Generator().manual_seed(1), 0.2))  # seeded
    white = torch.full((1, 3, 4, 4), 255.0)
    assert (hed_jitter(white, g, 0.2) - white).abs().max() < 60  # glass stays light (no absorbance to scale)


def test_blur_keeps_constants_and_mean():
    flat = torch.full((1, 3, 20, 20), 90.0)
    assert torch.allclose(gaussian_blur(flat, 1.0), flat, atol=1e-4)
    x = torch.rand(2, 3, 20, 20) * 255
    assert torch.equal(gaussian_blur(x, 0.0), x)
    blurred = gaussian_blur(x, 1.0)
    assert blurred.std() < x.std() and abs(float(blurred.mean() - x.mean())) < 2
    assert torch.equal(random_blur(x, torch.Generator(), 0.0), x)


def test_jpeg_artefacts_keep_shape_and_range():
    x = torch.from_numpy(_gradient(64, 64)).permute(2, 0, 1)[None].float().repeat(2, 1, 1, 1)
    rng = np.random.default_rng(0)
    assert torch.equal(random_jpeg(x, rng, 0.0), x)
    y = random_jpeg(x + torch.randn_like(x) * 20, rng, 1.0, qualities=(20, 20))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 255


@pytest.mark.parametrize("seed", range(4))
def test_scaled_crop_moves_points_with_pixels(seed):
    image = _gradient()
    rng = np.random.default_rng(seed)
    xy = rng.uniform(20, 260, size=(40, 2)).round().astype(np.float32)
    crop, new_xy, keep = random_scaled_crop(image, xy, 128, np.random.default_rng(seed), 0.2)
    assert crop.shape == (128, 128, 3) and keep.sum() > 0
    for (x0, y0), (x1, y1) in zip(xy[keep], new_xy[keep]):
        if 1 <= x1 < 126 and 1 <= y1 < 126:
            r, g = crop[int(round(y1)), int(round(x1)), :2].astype(float)
            assert abs(r - 0.5 * x0) <= 1.5 and abs(g - 0.5 * y0) <= 1.5


def test_scaled_crop_without_jitter_is_the_plain_crop():
    image, xy = _gradient(), np.array([[30.0, 40.0], [200.0, 100.0]], np.float32)
    a = random_scaled_crop(image, xy, 128, np.random.default_rng(3), 0.0)
    b = random_crop(image, xy, 128, np.random.default_rng(3))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])


def test_perturbation_parsing_and_scale_round_trip():
    p = parse_perturbation("hed=0.2,scale=0.8,blur=1,jpeg=40")
    assert p == Perturbation(hed=0.2, scale=0.8, blur=1.0, jpeg=40) and p.active
    assert not parse_perturbation("").active
    for bad in ("hue=1", "scale=0", "jpeg=400", "scale=x"):
        with pytest.raises(ConfigError, match="perturb"):
            parse_perturbation(bad)
    image = _gradient()
    xy = np.array([[10.0, 20.0], [150.0, 250.0]], np.float32)
    small, moved = rescale(image, xy, 0.8)
    assert small.shape[:2] == (240, 224)
    np.testing.assert_allclose(to_original_pixels(moved, Perturbation(scale=0.8)), xy, atol=1e-4)
    out = perturb_image(image, p, 0)
    assert out.shape == small.shape and np.array_equal(out, perturb_image(image, p, 0))
    assert not np.array_equal(out, perturb_image(image, p, 1))  # the stain draw depends on the image index


def test_low_resolution_keeps_size_and_positions_and_loses_detail():
    p = parse_perturbation("lowres=2")
    assert p.active and p.lowres == 2 and "lowres=2.0" in p.describe()
    with pytest.raises(ConfigError, match="lowres >= 1"):
        parse_perturbation("lowres=0.5")
    image = np.full((120, 100, 3), 230, np.uint8)
    image[40:60, 30:50] = (60, 30, 110)  # a 20-px nucleus: it stays where it was
    image[90, ::2] = 0  # a one-pixel-period pattern: gone at half the resolution
    out = perturb_image(image, p, 0)
    assert out.shape == image.shape and np.array_equal(perturb_image(image, Perturbation(), 0), image)
    assert out[45:55, 35:45].mean() < 100 and out[5:25, 5:25].mean() > 220
    assert np.ptp(out[90, 10:90].astype(int)) < 0.5 * np.ptp(image[90, 10:90].astype(int))


class _DotEngine:
    """Centre logit +10 at the cell of each black pixel, offsets (x % 4) / 4, features: the tile's colours."""

    name, device = "dots", torch.device("cpu")

    def run(self, tiles: np.ndarray) -> DenseOutputs:
        b, h, w, _ = tiles.shape
        centre = torch.full((b, 3, h // 4, w // 4), -10.0)
        centre[:, 1:] = 0.375  # the flip-symmetric offset where there is no nucleus
        for i, y, x in zip(*np.nonzero(tiles.sum(-1) == 0)):
            centre[i, :, y // 4, x // 4] = torch.tensor([10.0, (x % 4) / 4, (y % 4) / 4])
        fmap = torch.from_numpy(tiles).permute(0, 3, 1, 2).float()[:, :, ::4, ::4].contiguous()
        return DenseOutputs(centre, fmap)

    def classify(self, feats):
        return feats


def test_flip_tta_restores_cells_and_offsets():
    tiles = np.full((2, 32, 32, 3), 255, np.uint8)
    for i, (x, y) in enumerate([(5, 9), (30, 1)]):
        tiles[i, y, x] = 0
    plain, tta = _DotEngine().run(tiles), FlipTTAEngine(_DotEngine()).run(tiles)
    assert torch.allclose(tta.centre, plain.centre, atol=1e-6)
    assert tta.fmap.shape == plain.fmap.shape
