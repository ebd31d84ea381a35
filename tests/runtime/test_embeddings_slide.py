"""``--embeddings`` on the real CMU-1-Small-Region.svs with the shipped weights: the .h5ad holds the CSV's rows, and
each vector is the one :func:`predict_image` computes for the nucleus on its own tile."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from muse_fast.config import InferConfig
from muse_fast.io.readers import open_slide
from muse_fast.io.resample import read_at_scale
from muse_fast.io.tissue import detect_tissue
from muse_fast.model.weights import file_sha256, load_weights, resolve_weights
from muse_fast.post.decode import DecodeConfig
from muse_fast.post.merge import MergeConfig
from muse_fast.runtime.engines import TorchEngine
from muse_fast.runtime.pipeline import plan_tiles, run_slide, slide_scale
from muse_fast.runtime.predict import predict_image

anndata = pytest.importorskip("anndata", reason="anndata not installed (pip install -e .[dev] or .[embeddings])")


@pytest.fixture(scope="module")
def cmu(cmu_svs, tmp_path_factory):
    model, meta = load_weights()
    engine = TorchEngine(model, "cpu", precision="fp32")  # bf16 results move with the batch's make-up
    sha = file_sha256(resolve_weights(None))
    out = tmp_path_factory.mktemp("cmu")
    cfg = InferConfig(out_dir=out, quiet=True, embeddings=True)
    summary = run_slide(cmu_svs, engine, meta, cfg, {"weights": sha, "engine": engine.name})
    assert summary.status == "done" and summary.nuclei > 1000
    return out / f"{cmu_svs.stem}.h5ad", summary, engine, meta, sha


def test_rows_are_the_csv_rows(cmu):
    path, summary, _, meta, _ = cmu
    adata = anndata.read_h5ad(path)
    table = np.genfromtxt(path.with_suffix(".csv"), delimiter=",", names=True, dtype=None, encoding=None)
    assert adata.n_obs == len(table) == summary.nuclei
    np.testing.assert_allclose(adata.obs["x"], table["x"], atol=0.006)  # the CSV rounds to 0.01 px
    np.testing.assert_allclose(adata.obs["y"], table["y"], atol=0.006)
    assert (adata.obs["class_id"].to_numpy() == table["class_id"]).all()
    assert list(adata.obs["class_name"]) == list(table["class_name"])
    np.testing.assert_allclose(adata.obs["score"], table["score"], atol=6e-5)
    np.testing.assert_allclose(adata.obs["class_probability"], table["class_probability"], atol=6e-5)
    assert summary.per_class == {name: int((adata.obs["class_name"] == name).sum()) for name in meta.classes}


def test_anndata_opens_it_as_documented(cmu, cmu_svs):
    path, _, engine, meta, sha = cmu
    adata = anndata.read_h5ad(path)
    dim = engine.model.classifier.mlp[0].normalized_shape[0]  # the point classifier's input size
    assert adata.X.dtype == np.float16 and adata.X.shape == (adata.n_obs, dim) and np.isfinite(adata.X).all()
    assert list(adata.var_names) == [f"muse_{i}" for i in range(dim)]
    assert list(adata.obs.columns) == ["x", "y", "class_id", "class_name", "score", "class_probability"]  # the CSV's
    assert list(adata.obs.index[:3]) == ["0", "1", "2"]
    np.testing.assert_array_equal(adata.obsm["spatial"], adata.obs[["x", "y"]].to_numpy())
    slide = open_slide(cmu_svs)
    try:
        mpp, (w0, h0) = slide.mpp, slide.level_dimensions[0]
    finally:
        slide.close()
    xy = adata.obsm["spatial"]
    assert xy.min() >= 0 and (xy.max(0) <= (w0, h0)).all()  # level-0 pixels
    assert adata.uns["model"] == meta.model and adata.uns["weights_sha256"] == sha
    assert adata.uns["engine"] == "torch" and adata.uns["mpp"] == pytest.approx(mpp)
    assert adata.uns["model_mpp"] == meta.mpp and list(adata.uns["classes"]) == list(meta.classes)
    backed = anndata.read_h5ad(path, backed="r")  # X stays on disk: a slice at a time for large slides
    np.testing.assert_array_equal(backed.X[10:20], adata.X[10:20])
    backed.file.close()


def test_features_are_those_of_predict_image_on_the_tile(cmu, cmu_svs):
    """For the nuclei deep inside one tile's core (where no other tile competes), the stored vector is the one
    ``predict_image`` gives for that tile's pixels, to float16 precision."""
    path, _, engine, meta, _ = cmu
    adata = anndata.read_h5ad(path)
    slide = open_slide(cmu_svs)
    try:
        scale = slide_scale(slide, meta.mpp)
        tiles = plan_tiles(slide, meta, InferConfig.overlap, detect_tissue(slide, slide.mpp))
        model_xy = adata.obsm["spatial"] / scale
        inner = MergeConfig().margin + MergeConfig().dup_radius
        tile = max(tiles, key=lambda t: int(t.owns(model_xy, -inner).sum()))
        with ThreadPoolExecutor(1):
            image = read_at_scale(slide, round(tile.x * scale), round(tile.y * scale), meta.tile_size, scale)
    finally:
        slide.close()
    rows = np.flatnonzero(tile.owns(model_xy, -inner))
    assert len(rows) > 20
    direct = predict_image(engine, image, meta.tile_size, 32, DecodeConfig(), features=True)
    direct_xy = (direct.xy + (tile.x, tile.y)) * scale
    nearest = np.linalg.norm(direct_xy[None, :, :] - adata.obsm["spatial"][rows, None, :], axis=-1)
    match = nearest.argmin(1)
    assert nearest[np.arange(len(rows)), match].max() < 0.01  # the same nuclei, at the same places
    expected = direct.feat[match]
    assert expected.shape[1] == adata.n_vars and expected.dtype == np.float32
    np.testing.assert_allclose(adata.X[rows].astype(np.float32), expected, rtol=2e-3, atol=2e-3)
    assert (adata.obs["class_id"].to_numpy()[rows] == direct.class_id[match]).all()
