"""Geometric augmentations move coordinates exactly with the pixels; targets sit where the nuclei are."""

import numpy as np
import pytest
import torch

from muse_fast.train.data.augment import colour_jitter, flip_points, random_crop, rot90_points
from muse_fast.train.targets import centre_targets


def _marked(size, xy):
    img = np.zeros((size, size), np.int32)
    for i, (x, y) in enumerate(xy.astype(int)):
        img[y, x] = i + 1
    return img


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_rot90_moves_points_with_pixels(k):
    rng = np.random.default_rng(k)
    xy = rng.choice(31, size=(6, 2), replace=False).astype(np.float32)
    img = _marked(31, xy)
    rotated, new_xy = np.rot90(img, k), rot90_points(xy, k, 31)
    for i, (x, y) in enumerate(new_xy.astype(int)):
        assert rotated[y, x] == i + 1


def test_flip_moves_points_with_pixels():
    xy = np.array([[0.0, 3.0], [30.0, 7.0], [12.0, 12.0]], np.float32)
    flipped, new_xy = _marked(31, xy)[:, ::-1], flip_points(xy, 31)
    for i, (x, y) in enumerate(new_xy.astype(int)):
        assert flipped[y, x] == i + 1


def test_random_crop_keeps_points_inside():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, size=(300, 280, 3), dtype=np.uint8)
    xy = rng.uniform(0, [280, 300], size=(50, 2)).astype(np.float32)
    crop, shifted, keep = random_crop(image, xy, 224, rng)
    assert crop.shape == (224, 224, 3)
    assert ((shifted[keep] >= 0) & (shifted[keep] < 224)).all()
    assert not ((shifted[~keep] >= 0) & (shifted[~keep] < 224)).all(axis=1).any()


def test_colour_jitter_strength():
    batch = torch.randint(0, 256, (4, 3, 16, 16), generator=torch.Generator().manual_seed(1)).float()
    assert torch.equal(colour_jitter(batch, torch.Generator().manual_seed(0), strength=0.0), batch)
    jittered = colour_jitter(batch, torch.Generator().manual_seed(0))
    assert not torch.equal(jittered, batch)
    assert jittered.min() >= 0 and jittered.max() <= 255


def test_centre_targets():
    xy = np.array([[9.0, 13.0], [100.5, 50.25]], np.float32)
    heat, offset, mask = centre_targets(xy, 224)
    assert heat.shape == (56, 56) and mask.sum() == 2
    assert heat[3, 2] == 1.0 and heat[12, 25] == 1.0
    np.testing.assert_allclose(offset[:, 3, 2], [0.25, 0.25])
    np.testing.assert_allclose(offset[:, 12, 25], [0.125, 0.5625])
    assert heat.max() == 1.0 and 0 < heat[3, 3] < 1
