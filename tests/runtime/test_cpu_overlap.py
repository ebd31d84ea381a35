"""The overlapped pipeline (decode of batch i in a worker thread while the engine runs batch i + 1, as on a GPU) run on
the CPU finds what the serial path (decode on the main thread, the CPU's default) finds."""

import numpy as np
import pytest
from dots import META, DotEngine

from muse_fast.config import InferConfig
from muse_fast.io.readers import open_slide
from muse_fast.runtime import pipeline


def _predict(path, tmp_path, engine):
    cfg = InferConfig(out_dir=tmp_path, batch_size=2, tissue_mask=False, quiet=True)
    slide = open_slide(path)
    try:
        return pipeline.predict_slide(slide, engine, META, cfg)
    finally:
        slide.close()


def test_the_overlapped_path_finds_what_the_serial_path_finds(small_dots, tmp_path, monkeypatch):
    assert "cpu" not in pipeline.OVERLAP_DEVICES  # the CPU's engines use every core: decoding beside them slows them
    serial, tiles_serial, blank_serial = _predict(small_dots, tmp_path, DotEngine())
    monkeypatch.setattr(pipeline, "OVERLAP_DEVICES", {"cuda", "cpu"})
    overlapped, tiles, blank = _predict(small_dots, tmp_path, DotEngine())
    assert (tiles, blank) == (tiles_serial, blank_serial) and len(serial) > 100
    for field in ("xy", "score", "class_id", "class_prob", "tile"):
        np.testing.assert_array_equal(getattr(overlapped, field), getattr(serial, field))


def test_an_engine_failure_keeps_the_batch_that_was_decoding(small_dots, tmp_path, monkeypatch):
    """Overlapped, batch 0 is decoding when the engine fails on batch 1: batch 0 is still handed over."""
    monkeypatch.setattr(pipeline, "OVERLAP_DEVICES", {"cuda", "cpu"})
    cfg = InferConfig(out_dir=tmp_path, batch_size=2, tissue_mask=False, quiet=True)
    slide = open_slide(small_dots)
    done = []
    try:
        tiles = pipeline.plan_tiles(slide, META, cfg.overlap, None)
        with pytest.raises(RuntimeError, match="simulated crash"):
            for result in pipeline.iter_batches(slide, DotEngine(fail_at_call=2), META, cfg, tiles):
                done.append((result.index, len(result.nuclei)))
    finally:
        slide.close()
    assert [index for index, _ in done] == [0] and done[0][1] > 0
