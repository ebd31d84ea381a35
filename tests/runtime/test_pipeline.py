"""The runtime on a synthetic dot slide: merge correctness, determinism, resume, cohorts, bounded memory."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from dots import META, DotEngine, dot_positions, write_dot_slide
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from muse_fast.config import InferConfig
from muse_fast.errors import InputError
from muse_fast.runtime.cohort import collect_jobs
from muse_fast.runtime.pipeline import run_slide

FINGERPRINT = {"engine": "dots"}


def _cfg(out: Path, **kw) -> InferConfig:
    return InferConfig(out_dir=out, quiet=True, tissue_mask=False, batch_size=4, **kw)


def _read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    data = np.genfromtxt(path, delimiter=",", names=True, dtype=None, encoding=None)
    return np.stack([data["x"], data["y"]], 1), np.asarray(data["class_id"])


def test_every_dot_found_once_across_tile_borders(dot_slide, tmp_path):
    path, xy, cls = dot_slide
    summary = run_slide(path, DotEngine(), META, _cfg(tmp_path), FINGERPRINT)
    got_xy, got_cls = _read_csv(tmp_path / "dots.csv")
    d = cdist(xy, got_xy)
    rows, cols = linear_sum_assignment(np.where(d < 3, d, 1e6))
    matched = d[rows, cols] < 3
    assert matched.sum() == len(xy), f"{len(xy) - matched.sum()} dots lost"
    assert len(got_xy) == len(xy), f"{len(got_xy) - len(xy)} duplicates or false detections"
    assert (got_cls[cols[matched]] == cls[rows[matched]]).all()
    assert summary.nuclei == len(xy) and summary.status == "done"
    assert summary.per_class == {n: int((cls == i).sum()) for i, n in enumerate(META.classes)}


def test_outputs_are_deterministic_and_complete(dot_slide, tmp_path):
    path, _, _ = dot_slide
    for run in ("a", "b"):
        run_slide(path, DotEngine(), META, _cfg(tmp_path / run), FINGERPRINT)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    expected = ["dots." + s for s in ("csv", "density.png", "geojson", "manifest.json", "overlay.png")]
    assert [n for n in names if n != "dots.parquet"] == expected  # the manifest is identical too: same fingerprint
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    geo = json.loads((tmp_path / "a" / "dots.geojson").read_text())
    assert len(geo["features"]) == len(_read_csv(tmp_path / "a" / "dots.csv")[0])


def test_resume_after_a_crash_gives_identical_outputs(dot_slide, tmp_path):
    path, _, _ = dot_slide
    run_slide(path, DotEngine(), META, _cfg(tmp_path / "clean"), FINGERPRINT)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_slide(path, DotEngine(fail_at_call=5), META, _cfg(tmp_path / "crash"), FINGERPRINT)
    left = sorted(p.name for p in (tmp_path / "crash").iterdir())
    assert left == [".dots.partial"]  # no output under a final name, only the checkpoint shards
    shards = list((tmp_path / "crash" / ".dots.partial").glob("batch_*.npz"))
    assert len(shards) == 4  # 4 batches finished before the crash (prefetch does not write shards)
    engine = DotEngine()
    summary = run_slide(path, engine, META, _cfg(tmp_path / "crash"), FINGERPRINT)
    assert summary.resumed_batches == 4
    for name in ("dots.csv", "dots.geojson", "dots.overlay.png"):
        assert (tmp_path / "crash" / name).read_bytes() == (tmp_path / "clean" / name).read_bytes(), name
    assert not (tmp_path / "crash" / ".dots.partial").exists()


def test_finished_slides_are_skipped_unless_overwrite(dot_slide, tmp_path):
    path, _, _ = dot_slide
    run_slide(path, DotEngine(), META, _cfg(tmp_path), FINGERPRINT)
    engine = DotEngine()
    assert run_slide(path, engine, META, _cfg(tmp_path), FINGERPRINT).status == "skipped" and engine.calls == 0
    assert run_slide(path, engine, META, _cfg(tmp_path, overwrite=True), FINGERPRINT).status == "done"
    assert engine.calls > 0


def test_a_changed_config_does_not_reuse_old_shards(dot_slide, tmp_path):
    path, _, _ = dot_slide
    with pytest.raises(RuntimeError):
        run_slide(path, DotEngine(fail_at_call=3), META, _cfg(tmp_path), FINGERPRINT)
    summary = run_slide(path, DotEngine(), META, _cfg(tmp_path), {"engine": "other"})
    assert summary.resumed_batches == 0


def test_cohort_lists_and_folders(dot_slide, tmp_path):
    path, _, _ = dot_slide
    listing = tmp_path / "slides.csv"
    listing.write_text(f"path,mpp\n{path},0.5\nmissing.svs,\n")
    jobs = collect_jobs([listing, path.parent])
    assert [j.path for j in jobs] == [path, tmp_path / "missing.svs", path]
    assert jobs[0].mpp == 0.5 and jobs[1].mpp is None
    bad = tmp_path / "bad.csv"
    bad.write_text("file\nx.svs\n")
    with pytest.raises(InputError, match="'path' column"):
        collect_jobs([bad])


def test_cli_cohort_skips_bad_slides_and_reports_them(brca_dir, tmp_path):
    from muse_fast.cli import main

    png = sorted((brca_dir / "images").glob("*.png"))[0]
    broken = tmp_path / "broken.svs"
    broken.write_text("not a slide")
    listing = tmp_path / "cohort.csv"
    listing.write_text(f"path,mpp\n{broken},\n{png},0.5\n")
    assert main(["infer", str(listing), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    summary = json.loads((tmp_path / "out" / "run_summary.json").read_text())
    status = {Path(s["slide"]).name: s["status"] for s in summary["slides"]}
    assert status == {"broken.svs": "failed", png.name: "done"} and summary["failed"] == 1
    assert "cannot read" in summary["slides"][0]["error"]
    done = summary["slides"][1]  # nuclei per mm^2 of tissue, per class
    assert done["density_per_mm2"] == {k: round(n / done["area_mm2"], 2) for k, n in done["per_class"].items()}
    assert (tmp_path / "out" / f"{png.stem}.geojson").exists()
    assert not (tmp_path / "out" / "broken.geojson").exists()


PEAK_MEMORY_SCRIPT = """
import sys, tracemalloc
sys.path.insert(0, {tests!r})
from pathlib import Path
from dots import META, DotEngine
from muse_fast.config import InferConfig
from muse_fast.runtime.pipeline import run_slide
import muse_fast.io.blocks as blocks
import muse_fast.io.resample as resample
resample.THUMBNAIL_BAND_BYTES = 1 << 20  # the overlay's thumbnail bands, bounded by a constant: keep it below both
blocks.MAX_BYTES = 1 << 20  # the read cache's blocks, bounded by a constant too
cfg = InferConfig(out_dir=Path({out!r}), quiet=True, tissue_mask=False, batch_size=8, workers=1, embeddings={emb})
engine = DotEngine(feature_dim=192 if {emb} else 3)  # with embeddings: as many features as the shipped model's
tracemalloc.start()
summary = run_slide(Path({slide!r}), engine, META, cfg, {{}})
print(summary.nuclei, tracemalloc.get_traced_memory()[1])
"""


@pytest.mark.parametrize("embeddings", [False, True])
def test_peak_memory_does_not_grow_with_slide_size(tmp_path, embeddings):
    """Peak memory allocated by the run (tracemalloc: Python and numpy, which hold tiles, nuclei and shards) for a
    16x larger slide (16x the tiles and nuclei) stays within 15% of the small one's, also with ``--embeddings``
    (192 float16 features per nucleus streamed into the .h5ad).

    Allocations, unlike the process's peak RSS, do not depend on the allocator's arenas or on thread timing, so two
    noisy cores cannot flake this; holding every nucleus of the slide would add ~16x the small run's nuclei. The
    thumbnail band budget and the read cache's (constants, 64 MiB by default) are set below both slides so they bound
    both runs alike.
    """
    results = {}
    for name, side in (("small", 1200), ("large", 4800)):
        slide = tmp_path / f"{name}.tif"
        xy, cls = dot_positions(side, side, 24, seed=1)
        write_dot_slide(slide, side, side, xy, cls)
        script = PEAK_MEMORY_SCRIPT.format(
            tests=str(Path(__file__).parent), out=str(tmp_path / name), slide=str(slide), emb=embeddings
        )
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
        nuclei, peak_bytes = map(int, out.stdout.split())
        results[name] = (nuclei, peak_bytes)
    assert results["large"][0] > 14 * results["small"][0]
    assert results["large"][1] < 1.15 * results["small"][1], results


def test_parquet_table_matches_the_csv(dot_slide, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow not installed (pip install -e .[dev])")
    path, _, _ = dot_slide
    run_slide(path, DotEngine(), META, _cfg(tmp_path), FINGERPRINT)
    table = pq.read_table(tmp_path / "dots.parquet").to_pydict()
    xy, cls = _read_csv(tmp_path / "dots.csv")
    np.testing.assert_allclose(np.stack([table["x"], table["y"]], 1), xy, atol=0.006)  # CSV rounds to 0.01 px
    assert list(table["class_id"]) == list(cls)
    assert set(table["class_name"]) <= set(META.classes)


@pytest.mark.parametrize("damage", ["empty", "cut", "bit"])
def test_a_damaged_checkpoint_is_run_again(dot_slide, tmp_path, damage, caplog):
    """A shard cut short or with a flipped bit (a crash, a failing disk) is recomputed on the rerun, with one warning,
    and the outputs equal an uninterrupted run's; before, every rerun failed with a traceback."""
    path, _, _ = dot_slide
    run_slide(path, DotEngine(), META, _cfg(tmp_path / "clean"), FINGERPRINT)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_slide(path, DotEngine(fail_at_call=5), META, _cfg(tmp_path / "crash"), FINGERPRINT)
    shard = tmp_path / "crash" / ".dots.partial" / "batch_000001.npz"
    data = bytearray(shard.read_bytes())
    if damage == "empty":
        data = bytearray()
    elif damage == "cut":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 3] ^= 0x40  # inside the first arrays' bytes: the member's CRC no longer matches
    shard.write_bytes(bytes(data))
    summary = run_slide(path, DotEngine(), META, _cfg(tmp_path / "crash"), FINGERPRINT)
    assert summary.status == "done" and summary.resumed_batches == 3  # batch 1 ran again
    assert "batch_000001.npz is damaged; running that batch again" in caplog.text
    for name in ("dots.csv", "dots.geojson", "dots.overlay.png"):
        assert (tmp_path / "crash" / name).read_bytes() == (tmp_path / "clean" / name).read_bytes(), name


def test_no_damage_to_a_shard_raises_while_it_is_checked(tmp_path):
    """Every bit of a shard's first member header and data flipped in turn: the check answers, never raises (a
    flipped compression-method or encryption bit made zipfile raise NotImplementedError or RuntimeError)."""
    from muse_fast.runtime.predict import Nuclei
    from muse_fast.runtime.shards import ShardStore, readable_shard

    store = ShardStore(tmp_path, "s", {"k": 1})
    xy = np.arange(20, dtype=np.float64).reshape(10, 2)
    ones, zeros = np.ones(10, np.float32), np.zeros(10, np.int64)
    nuclei = Nuclei(xy, ones, zeros, ones, zeros)
    store.write(0, nuclei, 0)
    path = tmp_path / ".s.partial" / "batch_000000.npz"
    good = path.read_bytes()
    assert readable_shard(path)
    answers = set()
    for byte in range(min(len(good), 160)):
        for bit in range(8):
            damaged = bytearray(good)
            damaged[byte] ^= 1 << bit
            path.write_bytes(bytes(damaged))
            answers.add(readable_shard(path))
    assert answers == {True, False}  # some flips are harmless (e.g. a timestamp), many are caught


def test_checkpoints_beyond_a_million_batches_are_ours(tmp_path):
    from muse_fast.runtime.shards import foreign_entries, remove_checkpoints

    folder = tmp_path / ".s.partial"
    folder.mkdir()
    for name in ("batch_1000000.npz", ".batch_1000000.123.npz", "fingerprint.json"):
        (folder / name).write_bytes(b"")
    assert foreign_entries(folder) == []
    remove_checkpoints(folder)
    assert not folder.exists()


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((300, 300, 3), np.uint16),  # wrapped modulo 256
        np.zeros((300, 300, 3), np.float32),  # 0..1 floats: no nuclei, silently
        np.zeros((300, 300, 4), np.uint8),
        np.zeros((300, 300), np.uint8),
        np.zeros((3, 300, 300), np.uint8),
        [[[0, 0, 0]]],
    ],
)
def test_predict_image_refuses_what_is_not_rgb_uint8_in_one_line(image):
    from muse_fast.post.decode import DecodeConfig
    from muse_fast.runtime.predict import predict_image

    with pytest.raises(InputError, match="uint8") as err:
        predict_image(DotEngine(), image, 224, 32, DecodeConfig())
    assert len(str(err.value).splitlines()) == 1
