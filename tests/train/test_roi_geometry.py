"""ROI store geometry for pretraining: per-ROI native resolution, legacy stores, view mpp floors, detection at the
model's mpp mapped back to native pixels, unlabelled crops resampled to the detector's mpp, real slides."""

import json

import numpy as np
import pytest

from muse_fast.train.data.rois import Roi, RoiStore, RoiWriter
from muse_fast.train.data.views import ViewConfig, sample_mpp, view_pair
from muse_fast.train.detect_nuclei import detect_at, roi_mpp, wsi_rois
from muse_fast.train.semi import unlabelled_batch


def test_store_keeps_each_rois_resolution(tmp_path):
    writer = RoiWriter(tmp_path / "s", mpp=0.5, size=64, chunk=2)
    coarse = Roi(np.full((64, 64, 3), 10, np.uint8), np.array([[3.0, 4.0]], np.float32))
    fine = Roi(np.full((128, 128, 3), 20, np.uint8), np.array([[6.0, 8.0]], np.float32), mpp=0.25)
    for i, roi in enumerate([coarse, fine, coarse]):  # across a chunk boundary
        writer.add(roi, f"r{i}")
    writer.close()
    store = RoiStore(tmp_path / "s")
    assert len(store) == 3 and store.field_um == 32.0
    assert [store[i].mpp for i in range(3)] == [0.5, 0.25, 0.5]
    assert store[1].image.shape == (128, 128, 3) and int(store[1].image[0, 0, 0]) == 20
    np.testing.assert_array_equal(store[1].xy, fine.xy)


def test_store_refuses_a_roi_with_another_field(tmp_path):
    writer = RoiWriter(tmp_path / "s", mpp=0.5, size=64)
    with pytest.raises(ValueError, match="must be 128x128x3"):
        writer.add(Roi(np.zeros((64, 64, 3), np.uint8), np.zeros((0, 2), np.float32), mpp=0.25), "wrong")


def test_legacy_store_reads_at_the_store_mpp(tmp_path):
    """Stores written before per-ROI resolution hold one stacked ``images`` array."""
    images = np.arange(2 * 8 * 8 * 3, dtype=np.uint8).reshape(2, 8, 8, 3)
    np.savez(tmp_path / "chunk_00000.npz", images=images, xy=np.ones((3, 2), np.float32), offsets=np.array([0, 1, 3]))
    index = {"mpp": 0.5, "size": 8, "chunks": ["chunk_00000.npz"], "count": 2, "sources": ["a", "b"]}
    (tmp_path / "index.json").write_text(json.dumps(index))
    store = RoiStore(tmp_path)
    assert len(store) == 2 and store[1].mpp == 0.5 and len(store[1].xy) == 2
    np.testing.assert_array_equal(store[1].image, images[1])


def test_views_are_never_finer_than_the_roi():
    cfg = ViewConfig(size=64, mpp_min=0.25, mpp_max=1.0)
    rng = np.random.default_rng(0)
    at_20x = [sample_mpp(rng, cfg, 0.5, 256) for _ in range(200)]
    at_40x = [sample_mpp(rng, cfg, 0.25, 512) for _ in range(200)]
    assert min(at_20x) >= 0.5 and max(at_20x) <= 1.0
    assert min(at_40x) < 0.3 and max(at_40x) > 0.8  # a 40x ROI gives real 40x views and 20x-and-coarser partners


def test_native_roi_view_pairs_match_nuclei_by_identity():
    """View pairs from a 0.25 um/px ROI: each matched nucleus' marked pixel is where both views put it."""
    rng = np.random.default_rng(1)
    xy = rng.choice(np.arange(8, 248), size=(60, 2)).astype(np.float32)
    image = np.full((256, 256, 3), 255, np.uint8)
    roi = Roi(image, xy, mpp=0.25)
    cfg = ViewConfig(size=64, mpp_min=0.25, mpp_max=1.0, margin=0)
    for _ in range(5):
        a, b, matched = view_pair(roi, roi.mpp, cfg, rng)
        assert min(a.mpp, b.mpp) >= 0.25 and len(matched) > 0
        assert a.visible[matched].all() and b.visible[matched].all()


def test_detection_at_the_model_mpp_maps_back_to_native_pixels():
    """A dark 4x4 block at native 0.25 um/px is found at 0.5 um/px and reported at its native centre."""
    image = np.full((128, 128, 3), 255, np.uint8)
    image[60:64, 40:44] = 0  # centre (41.5, 61.5) in native pixels

    def darkest(img, _mpp):
        y, x = np.unravel_index(img.sum(-1).argmin(), img.shape[:2])
        return np.array([[x, y]], np.float32)

    found = detect_at(darkest, image, 0.25, 0.5)
    np.testing.assert_allclose(found[0], (41.5, 61.5), atol=1.0)
    np.testing.assert_array_equal(detect_at(darkest, image, 0.5, 0.5), darkest(image, 0.5))


def test_roi_mpp_keeps_finer_scans_only():
    assert roi_mpp(0.5, 0.25) == 0.25 and roi_mpp(0.5, 0.499) == 0.5 and roi_mpp(0.5, 1.0) == 0.5


def test_unlabelled_crops_come_at_the_detector_mpp(tmp_path):
    """A 0.25 um/px ROI striped with period 16 native pixels gives 224-px crops at 0.5 um/px with period 8."""
    writer = RoiWriter(tmp_path / "s", mpp=0.5, size=256)
    stripes = np.full((512, 512, 3), 255, np.uint8)
    stripes[:, (np.arange(512) % 16) < 8] = 0
    writer.add(Roi(stripes, np.zeros((0, 2), np.float32), mpp=0.25), "striped")
    writer.close()
    tiles = unlabelled_batch(RoiStore(tmp_path / "s"), 224, 0.5, 2, np.random.default_rng(0))
    assert tiles.shape == (2, 3, 224, 224)
    for tile in tiles:  # flips and 90-degree turns: the stripes run along one axis or the other
        profile = max(tile[0].mean(0).numpy(), tile[0].mean(1).numpy(), key=np.std)
        spectrum = np.abs(np.fft.rfft(profile - profile.mean()))
        assert 224 / spectrum.argmax() == 8.0


def test_wsi_rois_keep_the_native_resolution_of_a_finer_scan(ome_tif, cmu_svs):
    """OS-1 is scanned at 0.227 um/px: its ROIs stay at that resolution and cover the store's field (224 um)."""
    rois = list(wsi_rois(ome_tif, 0.5, 448, 2, np.random.default_rng(0)))
    side = round(448 * 0.5 / 0.22709982175592125)
    assert [(r.shape, m) for r, m in rois] == [((side, side, 3), pytest.approx(0.2271, abs=1e-4))] * 2
    assert all(r.std() > 5 for r, _ in rois)  # tissue, not padding
    rois = list(wsi_rois(cmu_svs, 0.5, 448, 1, np.random.default_rng(0)))  # 0.499 um/px: read at the store's mpp
    assert [(r.shape, m) for r, m in rois] == [((448, 448, 3), 0.5)]
    assert list(wsi_rois(ome_tif, 0.5, 1024, 1, np.random.default_rng(0))) == []  # 512 um > the 250 um slide
