"""``--embeddings`` on the dot slide: the .h5ad's rows are the CSV's, it is written and resumed like every output,
and a slide done without it is run again when it is asked for. The real slide: test_embeddings_slide.py."""

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from dots import META, DotEngine

import muse_fast.runtime.pipeline as pipeline
import muse_fast.runtime.predict as predict
from muse_fast.config import InferConfig
from muse_fast.errors import BackendUnavailable
from muse_fast.output import h5ad
from muse_fast.post.decode import DecodeConfig, decode_batch
from muse_fast.post.device_decode import PackedDecoder
from muse_fast.runtime import seams
from muse_fast.runtime.pipeline import run_slide

anndata = pytest.importorskip("anndata", reason="anndata not installed (pip install -e .[dev] or .[embeddings])")

FINGERPRINT = {"engine": "dots", "weights": "0" * 64}
DIM = 7  # feature channels of the dot engine here: not a multiple of its 3 colours
WRITE_STEPS = [
    "shard:1",
    "staged",
    "rename:geojson",
    "rename:csv",
    "rename:parquet",
    "rename:h5ad",
    "rename:overlay.png",
    "manifest",
    "cleanup",
]


def _cfg(out: Path, embeddings: bool = True, **kw) -> InferConfig:
    return InferConfig(out_dir=out, quiet=True, tissue_mask=False, batch_size=2, embeddings=embeddings, **kw)


def _run(slide: Path, out: Path, embeddings: bool = True, engine: DotEngine | None = None, **kw):
    return run_slide(slide, engine or DotEngine(feature_dim=DIM), META, _cfg(out, embeddings, **kw), FINGERPRINT)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".partial") and p.is_file())


def _csv(path: Path) -> np.ndarray:
    return np.genfromtxt(path, delimiter=",", names=True, dtype=None, encoding=None)


@pytest.fixture(scope="module")
def reference(small_dots, tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("reference")
    assert _run(small_dots, out).status == "done"
    return _files(out)


def test_rows_are_the_csv_rows_with_the_classifier_input(small_dots, tmp_path):
    summary = _run(small_dots, tmp_path)
    assert str(tmp_path / "dots.h5ad") in summary.outputs
    adata = anndata.read_h5ad(tmp_path / "dots.h5ad")
    table = _csv(tmp_path / "dots.csv")
    assert adata.n_obs == len(table) == summary.nuclei > 0
    assert list(adata.obs.index) == [str(i) for i in range(adata.n_obs)]
    xy = np.stack([table["x"], table["y"]], 1)
    np.testing.assert_allclose(adata.obsm["spatial"], xy, atol=0.006)  # the CSV rounds to 0.01 px
    np.testing.assert_array_equal(adata.obsm["spatial"], adata.obs[["x", "y"]].to_numpy())
    assert (adata.obs["class_id"].to_numpy() == table["class_id"]).all()
    assert list(adata.obs["class_name"]) == list(table["class_name"])
    assert list(adata.obs["class_name"].cat.categories) == list(META.classes)
    np.testing.assert_allclose(adata.obs["score"], table["score"], atol=6e-5)
    np.testing.assert_allclose(adata.obs["class_probability"], table["class_probability"], atol=6e-5)
    assert adata.X.dtype == np.float16 and adata.X.shape == (adata.n_obs, DIM)
    assert list(adata.var_names) == [f"muse_{i}" for i in range(DIM)]
    # the dot engine classifies a point by its strongest colour channel: the stored vector is what it was given
    assert (adata.X[:, :3].argmax(1) == adata.obs["class_id"].to_numpy()).all()
    np.testing.assert_array_equal(adata.X[:, 3:6], adata.X[:, :3])  # channels repeat the colours
    assert adata.uns["model"] == META.model and adata.uns["weights_sha256"] == FINGERPRINT["weights"]
    assert adata.uns["mpp"] == pytest.approx(0.5) and adata.uns["model_mpp"] == META.mpp
    assert list(adata.uns["classes"]) == list(META.classes) and adata.uns["slide"] == small_dots.name
    assert {"dots.h5ad", "dots.csv"} <= set(_manifest_outputs(tmp_path))


def _manifest_outputs(folder: Path) -> list[str]:
    return list(json.loads((folder / "dots.manifest.json").read_text())["outputs"])


def test_outputs_are_byte_identical_and_the_same_as_without_embeddings(small_dots, reference, tmp_path):
    _run(small_dots, tmp_path / "again")
    assert _files(tmp_path / "again") == reference
    _run(small_dots, tmp_path / "plain", embeddings=False)
    plain = _files(tmp_path / "plain")
    assert set(reference) - set(plain) == {"dots.h5ad"}
    same = set(plain) - {"dots.manifest.json"}  # its fingerprint says embeddings
    assert {name: plain[name] for name in same} == {name: reference[name] for name in same}


def _interrupt_at(monkeypatch, step: str) -> None:
    def hook(reached: str) -> None:
        if reached == step:
            raise KeyboardInterrupt

    monkeypatch.setattr(seams, "HOOK", hook)


@pytest.mark.parametrize("step", WRITE_STEPS)
def test_an_interrupt_at_any_write_step_leaves_no_half_file(small_dots, reference, tmp_path, monkeypatch, step):
    if step == "rename:parquet":
        pytest.importorskip("pyarrow", reason="pyarrow not installed (pip install -e .[dev])")
    _interrupt_at(monkeypatch, step)
    with pytest.raises(KeyboardInterrupt):
        _run(small_dots, tmp_path)
    assert _temporaries(tmp_path) == []
    renamed = WRITE_STEPS.index(step) > WRITE_STEPS.index("rename:h5ad")
    assert (tmp_path / "dots.h5ad").exists() == renamed
    if renamed:  # complete under its final name
        assert (tmp_path / "dots.h5ad").read_bytes() == reference["dots.h5ad"]
    monkeypatch.setattr(seams, "HOOK", seams._no_hook)
    engine = DotEngine(feature_dim=DIM)
    assert _run(small_dots, tmp_path, engine=engine).status == ("skipped" if step == "cleanup" else "done")
    assert engine.calls == (1 if step == "shard:1" else 0)  # the features come back from the shards
    assert _files(tmp_path) == reference


def test_an_interrupt_while_streaming_the_h5ad_removes_it(small_dots, reference, tmp_path, monkeypatch):
    calls = []
    write = h5ad.H5adWriter.write

    def interrupted(self, nuclei):
        calls.append(len(nuclei))
        if len(calls) == 2:
            raise KeyboardInterrupt
        write(self, nuclei)

    monkeypatch.setattr(h5ad.H5adWriter, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run(small_dots, tmp_path)
    assert _temporaries(tmp_path) == [] and not (tmp_path / "dots.h5ad").exists()
    assert not (tmp_path / "dots.csv").exists()
    monkeypatch.setattr(h5ad.H5adWriter, "write", write)
    assert _run(small_dots, tmp_path).status == "done" and _files(tmp_path) == reference


def test_resume_after_a_crash_gives_the_same_file(small_dots, reference, tmp_path):
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(small_dots, tmp_path, engine=DotEngine(fail_at_call=3, feature_dim=DIM))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".dots.partial"]
    summary = _run(small_dots, tmp_path)
    assert summary.resumed_batches == 2
    assert _files(tmp_path) == reference


def test_shards_of_a_run_without_features_are_not_mixed_in(small_dots, reference, tmp_path):
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(small_dots, tmp_path, embeddings=False, engine=DotEngine(fail_at_call=3, feature_dim=DIM))
    summary = _run(small_dots, tmp_path)
    assert summary.resumed_batches == 0 and _files(tmp_path) == reference
    with pytest.raises(RuntimeError, match="simulated crash"):  # and the other way round
        _run(small_dots, tmp_path / "b", engine=DotEngine(fail_at_call=3, feature_dim=DIM))
    summary = _run(small_dots, tmp_path / "b", embeddings=False)
    assert summary.resumed_batches == 0 and not (tmp_path / "b" / "dots.h5ad").exists()


def test_a_slide_done_without_embeddings_is_run_again_to_add_them(small_dots, reference, tmp_path):
    assert _run(small_dots, tmp_path, embeddings=False).status == "done"
    engine = DotEngine(feature_dim=DIM)
    summary = _run(small_dots, tmp_path, engine=engine)
    assert summary.status == "done" and engine.calls > 0  # not skipped
    assert _files(tmp_path) == reference  # every file, the manifest too, as if it had been asked for at first
    engine = DotEngine(feature_dim=DIM)
    summary = _run(small_dots, tmp_path, embeddings=False, engine=engine)  # a run that does not ask: done already
    assert summary.status == "skipped" and engine.calls == 0 and str(tmp_path / "dots.h5ad") in summary.outputs
    assert _run(small_dots, tmp_path, engine=engine).status == "skipped" and engine.calls == 0
    (tmp_path / "dots.h5ad").unlink()  # a listed file that disappeared: run again
    assert _run(small_dots, tmp_path).status == "done" and _files(tmp_path) == reference


def test_an_overwrite_without_embeddings_leaves_no_older_h5ad(small_dots, tmp_path):
    _run(small_dots, tmp_path)
    _run(small_dots, tmp_path, embeddings=False, overwrite=True, decode=DecodeConfig(threshold=0.5))
    assert not (tmp_path / "dots.h5ad").exists()  # its rows would not be those of the new CSV
    assert "dots.h5ad" not in _manifest_outputs(tmp_path)


def test_the_overlapped_device_decode_path_writes_the_same_file(small_dots, reference, tmp_path, monkeypatch):
    """The CUDA path (packed decode in a worker thread) run with CPU tensors."""
    monkeypatch.setattr(predict, "DEVICE_DECODE", {"cpu"})
    monkeypatch.setattr(pipeline, "OVERLAP_DEVICES", {"cpu"})
    _run(small_dots, tmp_path)
    assert _files(tmp_path) == reference


def test_packed_decode_returns_the_features_the_classifier_was_given():
    g = torch.Generator().manual_seed(0)
    logit = torch.full((3, 56, 56), -6.0)
    logit[1:, torch.randint(0, 56, (40,), generator=g), torch.randint(0, 56, (40,), generator=g)] = 3.0
    centre = torch.cat([logit[:, None], torch.rand(3, 2, 56, 56, generator=g)], dim=1)
    fmap = torch.randn(3, 24, 56, 56, generator=g)
    classifier = torch.nn.Linear(24, 3)
    expected = decode_batch(centre, fmap, classifier, (224, 224), 4, DecodeConfig())
    got = PackedDecoder(8)(centre, fmap, classifier, (224, 224), 4, DecodeConfig(), features=True)  # grows once
    assert [len(t.score) for t in got] == [len(t.score) for t in expected] and len(got[2].score) > 8
    for e, t in zip(expected, got):
        assert t.feat.shape == (len(t.score), 24)
        np.testing.assert_array_equal(t.feat, e.feat.numpy())
        logits = classifier(torch.from_numpy(t.feat)).detach()
        np.testing.assert_allclose(t.class_prob, torch.softmax(logits, -1).max(-1).values.numpy(), atol=1e-6)
    assert PackedDecoder()(centre, fmap, classifier, (224, 224), 4, DecodeConfig())[1].feat is None


def test_a_slide_without_nuclei_gives_an_empty_table(tmp_path):
    target = tmp_path / "none.h5ad"
    writer = h5ad.H5adWriter(target, target, META.classes, {"model": "dots", "mpp": 0.5})
    writer.write(predict.Nuclei.empty())
    writer.close()
    adata = anndata.read_h5ad(target)
    assert adata.shape == (0, 0) and list(adata.obs.columns)[:2] == ["x", "y"] and adata.uns["model"] == "dots"


def test_the_cli_flag_adds_the_file_to_a_finished_slide(small_dots, tmp_path, monkeypatch, caplog):
    from muse_fast import cli

    monkeypatch.setattr(cli, "_build_engine", lambda *args, **kw: (DotEngine(feature_dim=DIM), META, "0" * 64))
    out, args = tmp_path / "out", ["--no-tissue-mask", "--batch-size", "2"]
    assert cli.main(["infer", str(small_dots), "--out", str(out), "--quiet", *args]) == 0
    assert not (out / "dots.h5ad").exists()
    caplog.set_level(logging.INFO, logger="muse_fast.runtime")
    assert (
        cli.main(["infer", str(small_dots), "--out", str(out), "--embeddings", *args]) == 0
    )  # says it, unless --quiet
    lines = [r.getMessage() for r in caplog.records if r.name == "muse_fast.runtime.manifest"]
    assert lines == [f"{small_dots.name}: done without embeddings; running it again to add them"]
    adata = anndata.read_h5ad(out / "dots.h5ad")
    assert adata.n_vars == DIM and adata.uns["weights_sha256"] == "0" * 64 and adata.uns["engine"] == "dots"


def test_without_h5py_embeddings_fail_up_front_in_one_line(small_dots, tmp_path, monkeypatch, capsys):
    from muse_fast.cli import main

    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now raises ImportError
    with pytest.raises(BackendUnavailable, match="pip install h5py anndata"):
        _cfg(tmp_path)
    assert _cfg(tmp_path, embeddings=False).embeddings is False  # without the flag nothing needs it
    assert main(["infer", str(small_dots), "--out", str(tmp_path / "out"), "--embeddings", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "h5py" in err[0] and "pip install h5py anndata" in err[0], err
    assert not (tmp_path / "out").exists()  # failed before anything was loaded or written
