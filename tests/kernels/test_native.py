"""The native CPU library (csrc/, built by CMake) against the PyTorch references: real BRCA-M2C heat maps and feature
maps from the shipped network, random edge cases (empty, constant, ties, plateaus, borders, radius 0, more peaks
than the cap, points on and past the borders, 1-pixel maps), the fused decode op, and how the library is found.

The shared contract tests (test_peaks, test_point_gather, test_kernel_edges) also run "native" through conftest.
"""

import shutil

import numpy as np
import pytest
import torch
from gather_oracle import check_gather
from peak_checks import assert_same_peaks

from muse_fast.errors import BackendUnavailable
from muse_fast.kernels import native
from muse_fast.kernels.nuclei_decode import DecodeParams
from muse_fast.kernels.nuclei_decode import native as decode_native
from muse_fast.kernels.nuclei_decode import reference as decode_reference
from muse_fast.kernels.peaks import IMPLEMENTATIONS, find_peaks
from muse_fast.kernels.registry import select


@pytest.fixture
def cpu_lib():
    if reason := native.unavailable_reason("cpu"):
        pytest.skip(f"native CPU library not built: {reason}")


@pytest.fixture(scope="module")
def dense_brca(brca_dir):
    """Centre logits/offsets and feature maps of the shipped network on 8 real BRCA-M2C tiles (test split)."""
    from muse_fast.model.weights import load_weights
    from muse_fast.runtime.engines import TorchEngine
    from muse_fast.train.data.brca import load_split

    images = load_split("test")[:4]
    tiles = np.stack([im.image[:224, :224] for im in images] + [im.image[-224:, -224:] for im in images])
    model, _ = load_weights()
    with torch.no_grad():
        dense = TorchEngine(model, "cpu", precision="fp32").run(tiles)
    return dense.centre.float(), dense.fmap.float().contiguous(), model.classifier


@pytest.mark.parametrize("radius,border", [(1, 0), (2, 0), (3, 2), (1, 5)])
def test_peaks_on_real_heat_maps(cpu_lib, dense_brca, radius, border):
    heat = torch.sigmoid(dense_brca[0][:, 0])
    for threshold in (0.05, 0.3, 0.6):
        for cap in (8, 2048):  # with overflow, and without
            ref = find_peaks(heat, threshold, radius, cap, border, impl="reference")
            assert_same_peaks(find_peaks(heat, threshold, radius, cap, border, impl="native"), ref)
    assert int(find_peaks(heat, 0.3, radius, 2048, border, impl="reference").counts.min()) > 0  # real nuclei


def test_gather_on_real_feature_maps(cpu_lib, dense_brca):
    centre, fmap, _ = dense_brca
    peaks = find_peaks(torch.sigmoid(centre[:, 0]), 0.3, 1, 512, impl="reference")
    xy = 4.0 * peaks.yx.flip(-1).float() + 4.0 * centre.new_tensor(np.random.default_rng(0).random((1, 512, 2)))
    check_gather(fmap, xy, (224, 224), peaks.counts, "native")  # forward and backward, fp64 bound
    check_gather(fmap.to(memory_format=torch.channels_last), xy, (224, 224), peaks.counts, "native")


def test_fused_decode_on_real_maps_matches_the_pipeline(cpu_lib, dense_brca):
    """The TensorRT plugin's op (on the CPU) gives the nuclei of muse_fast/post/decode.py, row for row."""
    from muse_fast.post.decode import DecodeConfig, decode_batch

    centre, fmap, classifier = dense_brca
    p = DecodeParams(0.3, 1, 784, 0, 4, (224, 224))
    got = decode_native(torch.sigmoid(centre[:, 0]), centre[:, 1:3], fmap, p)
    ref = decode_reference(torch.sigmoid(centre[:, 0]), centre[:, 1:3], fmap, p)
    nuclei = decode_batch(centre, fmap, classifier, (224, 224), 4, DecodeConfig(0.3, 1, 784))
    for i, tile in enumerate(nuclei):
        n = len(tile.xy)
        assert int(got.counts[i]) == n > 0 and int(got.overflow[i]) == 0
        assert torch.equal(got.xy[i, :n], tile.xy) and torch.equal(got.scores[i, :n], tile.score)
        assert not got.xy[i, n:].any() and not got.scores[i, n:].any() and not got.feats[i, n:].any()
    for name in ("xy", "scores", "counts", "overflow"):
        assert torch.equal(getattr(got, name), getattr(ref, name)), name
    assert torch.allclose(got.feats, ref.feats, atol=1e-4, rtol=1e-5)


def _random_maps(rng: np.random.Generator, shape) -> torch.Tensor:
    kind = rng.integers(5)
    if kind == 0:  # few levels: ties and plateaus everywhere
        x = rng.integers(0, 4, shape) / 3.0
    elif kind == 1:
        x = np.full(shape, 0.7)  # constant: no peak
    elif kind == 2:
        x = np.zeros(shape)
        x[..., rng.integers(shape[1]), rng.integers(shape[2])] = 0.9  # one spike, possibly on a border
    else:
        x = rng.random(shape)
    return torch.from_numpy(x).float()


def test_peaks_random_edge_cases(cpu_lib):
    rng = np.random.default_rng(17)
    shapes = [(1, 1, 1), (2, 1, 9), (2, 9, 1), (3, 2, 2), (2, 17, 31), (1, 64, 3), (4, 23, 23)]
    for trial in range(400):
        shape = shapes[trial % len(shapes)]
        x = _random_maps(rng, shape)
        radius, border = int(rng.integers(0, 4)), int(rng.integers(0, 7))
        threshold = float(rng.choice([-1.0, 0.0, 0.2, 0.5, 2.0]))
        cap = int(rng.choice([0, 1, 3, 1000]))
        ref = find_peaks(x, threshold, radius, cap, border, impl="reference")
        assert_same_peaks(find_peaks(x, threshold, radius, cap, border, impl="native"), ref)


@pytest.mark.parametrize("b,h,w", [(0, 9, 9), (2, 0, 5), (2, 5, 0)])
def test_empty_maps(cpu_lib, b, h, w):
    peaks = find_peaks(torch.rand(b, h, w), 0.5, 1, 16, impl="native")
    assert peaks.counts.shape == (b,) and int(peaks.counts.sum()) == 0


@pytest.mark.parametrize("c,h,w", [(1, 1, 1), (3, 1, 7), (5, 9, 1), (7, 13, 11)])
def test_gather_at_borders_and_odd_sizes(cpu_lib, c, h, w):
    g = torch.Generator().manual_seed(c * 100 + h + w)
    in_h, in_w = 4 * h, 4 * w
    fmap = torch.randn(2, c, h, w, generator=g)
    edges = [[0.0, 0.0], [in_w, in_h], [in_w, 0.0], [0.0, in_h], [-0.5, 2.0], [in_w + 0.5, 1.0], [1e6, -1e6]]
    xy = torch.cat([torch.tensor([edges] * 2), torch.rand(2, 9, 2, generator=g) * (in_w + 8) - 4], dim=1)
    for counts in (None, torch.tensor([16, 3], dtype=torch.int32), torch.tensor([99, -2], dtype=torch.int32)):
        check_gather(fmap, xy, (in_h, in_w), counts, "native")


def test_fused_decode_random_edge_cases(cpu_lib):
    rng = np.random.default_rng(5)
    for trial in range(60):
        h, w = int(rng.integers(1, 20)), int(rng.integers(1, 20))
        heat = _random_maps(rng, (3, h, w))
        offsets = torch.from_numpy(rng.random((3, 2, h, w)) * 1.6 - 0.3).float()  # some past [0, 1]: clamped
        fmap = torch.from_numpy(rng.standard_normal((3, 4, h, w))).float()
        p = DecodeParams(float(rng.choice([0.0, 0.4])), int(rng.integers(0, 3)), int(rng.choice([0, 2, 50])),
                         int(rng.integers(0, 3)), 4, (4 * h, 4 * w))  # fmt: skip
        got, ref = decode_native(heat, offsets, fmap, p), decode_reference(heat, offsets, fmap, p)
        for name in ("xy", "scores", "counts", "overflow"):
            assert torch.equal(getattr(got, name), getattr(ref, name)), (trial, name)
        assert torch.allclose(got.feats, ref.feats, atol=1e-5), trial


@pytest.fixture
def fresh_loader(monkeypatch):
    """Library look-ups start afresh, and the cache is cleared again afterwards."""
    native._load.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    native._load.cache_clear()


def test_missing_library_is_one_line_with_the_build_command(fresh_loader, tmp_path):
    fresh_loader.setattr(native, "search_dirs", lambda: [tmp_path])
    reason = native.unavailable_reason("cpu")
    assert "libmuse_native_cpu.so" in reason and native.BUILD_COMMAND in reason and "\n" not in reason
    with pytest.raises(BackendUnavailable, match="kernel implementation 'native' cannot run here: libmuse_native"):
        select(IMPLEMENTATIONS, "native", torch.zeros(1, 4, 4))
    assert select(IMPLEMENTATIONS, "auto", torch.zeros(1, 4, 4)).name != "native"  # not built: numba or reference


def test_auto_takes_the_native_library_on_the_cpu_where_it_is_built(cpu_lib, fresh_loader):
    from muse_fast.kernels.point_gather import IMPLEMENTATIONS as GATHER

    for impls in (IMPLEMENTATIONS, GATHER):
        assert select(impls, "auto", torch.zeros(1, 4, 4)).name == "native"


def test_muse_native_build_is_searched_first(cpu_lib, fresh_loader, tmp_path):
    built = native.library_path("cpu")
    shutil.copy(built, tmp_path / built.name)
    fresh_loader.setenv("MUSE_NATIVE_BUILD", str(tmp_path))
    assert native.library_path("cpu") == tmp_path / built.name
    x = torch.zeros(1, 5, 5)
    x[0, 2, 3] = 1.0
    assert find_peaks(x, 0.5, 1, 4, impl="native").yx[0, 0].tolist() == [2, 3]


def test_a_stale_library_is_said_once_with_the_rebuild_command(fresh_loader, tmp_path, caplog):
    """A library built for another ABI (an upgrade without a rebuild) is not used, and the run says so once."""
    from muse_fast.kernels import registry

    stale = tmp_path / native.LIBRARIES["cpu"]
    stale.write_bytes(b"")
    fresh_loader.setattr(native, "search_dirs", lambda: [tmp_path])
    fresh_loader.setattr(native, "_load", lambda kind: f"{stale} has ABI 2, this package needs 3: rebuild it with: X")
    fresh_loader.setattr(registry, "_warned", set())
    with caplog.at_level("WARNING", logger="muse_fast.kernels.registry"):
        for _ in range(3):
            assert select(IMPLEMENTATIONS, "auto", torch.zeros(1, 4, 4)).name != "native"
    said = [r.getMessage() for r in caplog.records if "native CPU library not used" in r.getMessage()]
    assert len(said) == 1 and "rebuild it with" in said[0]


def test_a_library_never_built_is_not_warned_about(fresh_loader, tmp_path, caplog):
    from muse_fast.kernels import registry

    fresh_loader.setattr(native, "search_dirs", lambda: [tmp_path])
    fresh_loader.setattr(registry, "_warned", set())
    with caplog.at_level("WARNING", logger="muse_fast.kernels.registry"):
        select(IMPLEMENTATIONS, "auto", torch.zeros(1, 4, 4))
    assert not [r for r in caplog.records if "native CPU library" in r.getMessage()]
