"""Output integrity in one process: interrupts at every write step, the manifest, the resume fingerprint, folder
errors (a file in the way, permissions, a full disk) and the progress bar's count. Real processes: test_concurrency.
"""

import errno
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from dots import META, DotEngine, dot_positions, write_dot_slide

from muse_fast.config import InferConfig
from muse_fast.errors import ConfigError, OutputError, WeightsError
from muse_fast.io.tiling import tile_grid
from muse_fast.model.weights import WeightsMeta
from muse_fast.output import atomic, writers
from muse_fast.post.decode import DecodeConfig
from muse_fast.runtime import seams, shards
from muse_fast.runtime.fingerprint import file_identity
from muse_fast.runtime.pipeline import run_slide

FINGERPRINT = {"engine": "dots"}
WRITE_STEPS = ["staged", "rename:geojson", "rename:csv", "rename:parquet", "rename:overlay.png", "manifest", "cleanup"]


def _cfg(out: Path, **kw) -> InferConfig:
    return InferConfig(out_dir=out, quiet=True, tissue_mask=False, batch_size=2, **kw)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _hidden(folder: Path) -> list[str]:
    """Everything a finished run must not leave: temporary files, the lock, the shard folder."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def reference(small_dots, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    assert run_slide(small_dots, DotEngine(), META, _cfg(out), FINGERPRINT).status == "done"
    return _files(out)


def _interrupt_at(monkeypatch, step: str, exc: BaseException) -> None:
    def hook(reached: str) -> None:
        if reached == step:
            raise exc

    monkeypatch.setattr(seams, "HOOK", hook)


def test_a_run_writes_a_manifest_last_and_leaves_nothing_hidden(small_dots, reference, tmp_path):
    assert run_slide(small_dots, DotEngine(), META, _cfg(tmp_path), FINGERPRINT).status == "done"
    assert _files(tmp_path) == reference and _hidden(tmp_path) == []
    manifest = json.loads((tmp_path / "dots.manifest.json").read_text())
    assert set(manifest["outputs"]) == set(reference) - {"dots.manifest.json"}
    assert manifest["fingerprint"]["file"] == file_identity(small_dots)
    assert manifest["nuclei"] == sum(manifest["per_class"].values()) > 0


@pytest.mark.parametrize("step", ["shard:1", *WRITE_STEPS])
def test_an_interrupt_at_any_write_step_is_completed_by_the_rerun(small_dots, reference, tmp_path, monkeypatch, step):
    """Issue 13.3: before, an interrupt once ``<stem>.csv`` existed made the rerun print 'skipped' for good."""
    if step == "rename:parquet":
        pytest.importorskip("pyarrow", reason="pyarrow not installed (pip install -e .[dev])")
    _interrupt_at(monkeypatch, step, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        run_slide(small_dots, DotEngine(), META, _cfg(tmp_path), FINGERPRINT)
    assert not any(p.name.endswith(".partial") and p.is_file() for p in tmp_path.iterdir()), _hidden(tmp_path)
    assert not (tmp_path / ".dots.lock").exists()
    assert (tmp_path / "dots.manifest.json").exists() == (step == "cleanup")  # the manifest is the last word
    monkeypatch.setattr(seams, "HOOK", seams._no_hook)
    engine = DotEngine()
    summary = run_slide(small_dots, engine, META, _cfg(tmp_path), FINGERPRINT)
    assert summary.status == ("skipped" if step == "cleanup" else "done")
    assert engine.calls == (1 if step == "shard:1" else 0)  # batches 0 and 1 come from the shards
    assert _files(tmp_path) == reference and _hidden(tmp_path) == []


def test_a_killed_run_leaves_temp_files_that_the_rerun_removes(small_dots, reference, tmp_path):
    """What SIGKILL leaves mid-write (issue 13.3: a 0-byte ``.overlay.png.partial``): the next run cleans it up."""
    for name in ("dots.overlay.png", "dots.csv", "dots.manifest.json"):
        (tmp_path / f".{name}.999999.partial").write_bytes(b"")
    (tmp_path / ".dots.overlay.png.partial").write_bytes(b"")  # the name older versions used
    (tmp_path / ".dots.lock").write_text("999999\n")  # the kernel released the lock of the dead process
    (tmp_path / ".other.csv.1.partial").write_bytes(b"x")  # another slide's: not touched
    run_slide(small_dots, DotEngine(), META, _cfg(tmp_path), FINGERPRINT)
    assert _hidden(tmp_path) == [".other.csv.1.partial"]
    assert {k: v for k, v in _files(tmp_path).items() if not k.startswith(".")} == reference


def test_a_listed_output_that_disappeared_is_recomputed(small_dots, reference, tmp_path):
    run_slide(small_dots, DotEngine(), META, _cfg(tmp_path), FINGERPRINT)
    (tmp_path / "dots.overlay.png").unlink()
    assert run_slide(small_dots, DotEngine(), META, _cfg(tmp_path), FINGERPRINT).status == "done"
    assert _files(tmp_path) == reference


def test_resume_does_not_mix_two_files_of_the_same_size(small_dots, tmp_path):
    """Issue 13.4: saved batches of a replaced file (same size, same tile count) were resumed into the new one."""
    slide = tmp_path / "in" / "dots.tif"
    slide.parent.mkdir()
    shutil.copy(small_dots, slide)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_slide(slide, DotEngine(fail_at_call=3), META, _cfg(tmp_path / "out"), FINGERPRINT)
    assert len(list((tmp_path / "out" / ".dots.partial").glob("batch_*.npz"))) == 2
    xy, cls = dot_positions(500, 400, 16, seed=7)
    write_dot_slide(slide, 500, 400, xy, cls)  # another image of the same size
    fresh = run_slide(slide, DotEngine(), META, _cfg(tmp_path / "fresh"), FINGERPRINT)
    summary = run_slide(slide, DotEngine(), META, _cfg(tmp_path / "out"), FINGERPRINT)
    assert summary.resumed_batches == 0 and summary.nuclei == fresh.nuclei
    assert _files(tmp_path / "out")["dots.csv"] == _files(tmp_path / "fresh")["dots.csv"]


def test_file_identity_sees_a_same_size_same_mtime_replacement(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"\x01" * 3_000_000)
    b.write_bytes(b"\x01" * 2_999_999 + b"\x02")  # differs only in the last byte
    for p in (a, b):
        os.utime(p, ns=(1, 1))
    assert file_identity(a) != file_identity(b)
    assert file_identity(a)["size"] == file_identity(b)["size"]


def test_a_touched_or_copied_slide_stays_finished(small_dots, tmp_path):
    """Rerunning the README demo re-unzips the slide (same bytes, new mtime): it must be skipped, not refused."""
    run_slide(small_dots, DotEngine(), META, _cfg(tmp_path / "out"), FINGERPRINT)
    copy = tmp_path / "copy" / small_dots.name
    copy.parent.mkdir()
    copy.write_bytes(small_dots.read_bytes())
    os.utime(copy, ns=(10**18, 10**18))
    summary = run_slide(copy, DotEngine(), META, _cfg(tmp_path / "out"), FINGERPRINT)
    assert summary.status == "skipped"


def test_a_finished_folder_with_other_settings_is_refused(small_dots, tmp_path):
    """Issue 13.6: a rerun with another --threshold printed 'skipped' and silently kept the old results."""
    run_slide(small_dots, DotEngine(), META, _cfg(tmp_path), FINGERPRINT)
    before = _files(tmp_path)
    other = _cfg(tmp_path, decode=DecodeConfig(threshold=0.5))
    with pytest.raises(OutputError, match=r"decode\.threshold 0\.3 -> 0\.5.*--overwrite.*--out") as info:
        run_slide(small_dots, DotEngine(), META, other, FINGERPRINT)
    assert len(str(info.value).splitlines()) == 1 and _files(tmp_path) == before
    summary = run_slide(small_dots, DotEngine(), META, _cfg(tmp_path, overwrite=True, decode=other.decode), {})
    manifest = json.loads((tmp_path / "dots.manifest.json").read_text())
    assert summary.status == "done" and manifest["fingerprint"]["settings"]["decode"]["threshold"] == 0.5


class FullDisk:
    """A file on a full disk: every write fails with ENOSPC, and so does the flush when it is closed."""

    opened = 0

    def __init__(self, path, mode="w", **kw):
        self.fh = open(path, mode, **kw)
        FullDisk.opened += 1

    def _full(self):
        return OSError(errno.ENOSPC, "No space left on device")

    def write(self, data):
        raise self._full()

    def close(self):
        self.fh.close()
        raise self._full()

    def __getattr__(self, name):
        return getattr(self.fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _only_checkpoints_left_then_a_rerun_finishes(small_dots, reference, tmp_path, monkeypatch) -> None:
    """After a run that failed: only the checkpoint shards stay (no temporary file, no output), and without the fault
    a rerun writes the reference files and leaves nothing hidden."""
    assert _hidden(tmp_path) == [".dots.partial"]
    assert not any(p.name.startswith(".") for p in (tmp_path / ".dots.partial").iterdir())
    assert not any(p.name.startswith("dots.") for p in tmp_path.iterdir())
    monkeypatch.undo()
    run_slide(small_dots, DotEngine(), META, _cfg(tmp_path), FINGERPRINT)
    assert _files(tmp_path) == reference and _hidden(tmp_path) == []


@pytest.mark.parametrize("where", ["tables", "images", "shards"])
def test_a_full_disk_is_one_line_and_leaves_no_temp_files(small_dots, reference, tmp_path, monkeypatch, where):
    """Issue 13.5: ENOSPC came as a chained traceback, cleanup failed too, and temp files stayed."""
    monkeypatch.setattr(FullDisk, "opened", 0)
    if where == "tables":
        monkeypatch.setattr(writers, "open", FullDisk, raising=False)
    elif where == "images":  # the tables are complete by then, under their temporary names
        real_open = atomic._open
        monkeypatch.setattr(atomic, "_open", lambda p, mode: (FullDisk if ".png." in p.name else real_open)(p, mode))
    else:
        calls = []

        def savez(fh, **arrays):
            calls.append(1)
            if len(calls) > 1:  # the first batch is saved, then the disk is full
                raise OSError(errno.ENOSPC, "No space left on device")
            np.savez(fh, **arrays)

        monkeypatch.setattr(shards.np, "savez", savez)
    with pytest.raises(OutputError, match="no space left") as info:
        run_slide(small_dots, DotEngine(), META, _cfg(tmp_path), FINGERPRINT)
    assert len(str(info.value).splitlines()) == 1 and "--out" in str(info.value)
    # the fault hit where intended (the PNGs are encoded two at a time: more than one may have been opened)
    assert FullDisk.opened in {"tables": {1}, "images": {1, 2, 3}, "shards": {0}}[where]
    _only_checkpoints_left_then_a_rerun_finishes(small_dots, reference, tmp_path, monkeypatch)


@pytest.mark.parametrize(
    "where, exc",
    [("overlay", RuntimeError("drawing failed")), ("density", KeyboardInterrupt()), ("density", RuntimeError("x"))],
)
def test_a_failure_on_either_thread_of_the_final_pass_leaves_no_temporary_files(
    small_dots, reference, tmp_path, monkeypatch, where, exc
):
    """The overlay is drawn and encoded on a thread beside the tables, the density map on the run's own: an error on
    either, or an interrupt, ends the run with that error, no temporary file stays, and a rerun writes the same
    files."""
    from muse_fast.output.density import DensityGrid
    from muse_fast.output.overlay import Overlay

    def fail(*args, **kwargs):
        raise exc

    if where == "overlay":
        monkeypatch.setattr(Overlay, "image", property(fail))  # runs on the thread beside
    else:
        monkeypatch.setattr(DensityGrid, "image", fail)  # runs on the run's thread while the overlay is encoded
    with pytest.raises(type(exc)):
        run_slide(small_dots, DotEngine(), META, _cfg(tmp_path), FINGERPRINT)
    _only_checkpoints_left_then_a_rerun_finishes(small_dots, reference, tmp_path, monkeypatch)


def test_a_second_interrupt_that_ends_the_run_before_the_png_thread_leaves_no_temporary_file(
    small_dots, reference, tmp_path, monkeypatch
):
    """A first interrupt on the run's thread while the overlay PNG is drawn beside it; a second one breaks the wait
    for that thread, so the run ends (and removes its staged files) before the PNG is written. The PNG's temporary
    file was created before its job started, so the removal finds it: nothing is left when the job finishes late."""
    import threading

    from muse_fast.output.density import DensityGrid
    from muse_fast.output.overlay import Overlay
    from muse_fast.runtime import outputs

    started, release = threading.Event(), threading.Event()
    real_image = Overlay.image

    def slow_image(self):
        started.set()
        release.wait(10)
        return real_image.fget(self)

    def interrupt(*args, **kwargs):
        assert started.wait(10)  # the overlay job is running beside
        raise KeyboardInterrupt

    class SecondInterrupt(outputs.ThreadPoolExecutor):
        def __exit__(self, exc_type, exc, tb):
            if exc_type is not None:
                raise KeyboardInterrupt  # the second Ctrl-C, while the exit would wait for the running job
            return super().__exit__(exc_type, exc, tb)

    monkeypatch.setattr(Overlay, "image", property(slow_image))
    monkeypatch.setattr(DensityGrid, "image", interrupt)
    monkeypatch.setattr(outputs, "ThreadPoolExecutor", SecondInterrupt)
    with pytest.raises(KeyboardInterrupt):
        run_slide(small_dots, DotEngine(), META, _cfg(tmp_path), FINGERPRINT)
    release.set()  # the job beside finishes after the run has ended
    for thread in threading.enumerate():
        if thread.name.startswith("muse-images"):
            thread.join(10)
    _only_checkpoints_left_then_a_rerun_finishes(small_dots, reference, tmp_path, monkeypatch)


def test_an_out_path_that_is_a_file_is_one_line(small_dots, tmp_path):
    """Issue 13.5: --out naming a file raised FileExistsError."""
    target = tmp_path / "taken"
    target.write_text("mine")
    with pytest.raises(OutputError, match="not a folder"):
        run_slide(small_dots, DotEngine(), META, _cfg(target), FINGERPRINT)
    with pytest.raises(OutputError, match="not a folder"):
        run_slide(small_dots, DotEngine(), META, _cfg(target / "sub"), FINGERPRINT)
    assert target.read_text() == "mine"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions; run as a normal user")
def test_a_read_only_folder_is_one_line(small_dots, tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="permission denied"):
            run_slide(small_dots, DotEngine(), META, _cfg(out), FINGERPRINT)
        assert list(out.iterdir()) == []
    finally:
        out.chmod(0o755)


def test_bad_resolutions_are_refused_with_one_line(small_dots, tmp_path):
    """Issue 13.5: --mpp inf and weights with mpp 0 ended in ZeroDivisionError."""
    for mpp in (float("inf"), float("nan"), 0.0, -0.5):
        with pytest.raises(ConfigError, match="positive, finite number of microns"):
            run_slide(small_dots, DotEngine(), META, _cfg(tmp_path), FINGERPRINT, mpp=mpp)
        with pytest.raises(ConfigError, match="--mpp"):
            _cfg(tmp_path, mpp=mpp)
    for bad in (0.0, float("inf"), -1.0):
        meta = WeightsMeta("dots", META.classes, bad, 224)
        with pytest.raises(WeightsError, match="record mpp"):
            run_slide(small_dots, DotEngine(), meta, _cfg(tmp_path), FINGERPRINT)


def test_an_implausible_mpp_warns_with_the_tile_count(small_dots, tmp_path, caplog):
    """Issue 13.6: --mpp 100 planned millions of tiles without a word."""
    with pytest.raises(RuntimeError, match="simulated crash"):  # stop at the first batch, after the warning
        run_slide(small_dots, DotEngine(fail_at_call=1), META, _cfg(tmp_path), FINGERPRINT, mpp=10.0)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    (line,) = [w for w in warned if "outside the usual" in w]
    tiles = len(tile_grid(500 * 20, 400 * 20, 224, 32))  # 10 um/px -> 0.5 um/px is 20x larger
    assert "10 um/px is outside the usual 0.1-4 um/px" in line and f"{tiles:,} tiles" in line
    assert len(warned) == 2 and "records 0.5 um/px; --mpp 10 overrides it" in " ".join(warned)  # the file's own 0.5
    caplog.clear()
    run_slide(small_dots, DotEngine(), META, _cfg(tmp_path / "ok"), FINGERPRINT, mpp=0.5)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_the_progress_bar_counts_candidates_and_the_summary_the_merged_nuclei(small_dots, tmp_path, monkeypatch):
    """The bar's running count says it includes tile-overlap duplicates (it ends above the written count)."""
    import tqdm

    postfixes = []

    class Bar(tqdm.tqdm):  # records what the bar is told, whatever tqdm's redraw timing
        def set_postfix_str(self, s="", refresh=True):
            postfixes.append(s)
            super().set_postfix_str(s, refresh)

    monkeypatch.setattr(tqdm, "tqdm", Bar)
    summary = run_slide(small_dots, DotEngine(), META, _cfg(tmp_path), FINGERPRINT)
    shown = [
        int(m.group(1).replace(",", ""))
        for p in postfixes
        if (m := re.match(r"([\d,]+) nuclei incl\. tile-overlap duplicates$", p))
    ]
    assert shown and len(shown) == len(postfixes) and shown == sorted(shown)
    assert shown[-1] > summary.nuclei  # the dot slide has nuclei in the tile overlaps
    written = len((tmp_path / "dots.csv").read_text().splitlines()) - 1
    assert summary.nuclei == written and summary.line().startswith(f"dots.tif: {written} nuclei")


def test_the_manifest_records_each_class_density_per_mm2_of_tissue(small_dots, tmp_path):
    """A single-slide run (no run_summary.json) still records nuclei per mm^2 of tissue per class."""
    summary = run_slide(small_dots, DotEngine(), META, _cfg(tmp_path), FINGERPRINT)
    manifest = json.loads((tmp_path / "dots.manifest.json").read_text())
    assert summary.area_mm2 > 0 and set(manifest["density_per_mm2"]) == set(META.classes)
    for name, count in summary.per_class.items():
        assert manifest["density_per_mm2"][name] == pytest.approx(count / summary.area_mm2, abs=0.01)
    assert sum(manifest["density_per_mm2"].values()) > 0


def test_a_manifest_with_fields_of_a_later_version_is_still_a_finished_run(small_dots, tmp_path):
    """A later version may add fields to the manifest (as class_colours was added): this one still reads it as the
    record of a finished run, instead of taking the outputs for files it did not write."""
    run_slide(small_dots, DotEngine(), META, _cfg(tmp_path), FINGERPRINT)
    path = tmp_path / "dots.manifest.json"
    manifest = json.loads(path.read_text())
    assert manifest["class_colours"] and len(manifest["class_colours"]) == len(META.classes)
    path.write_text(json.dumps({**manifest, "added_by_a_later_version": {"x": 1}}))
    assert run_slide(small_dots, DotEngine(), META, _cfg(tmp_path), FINGERPRINT).status == "skipped"
