"""The progress bar says what its running count is: nuclei before the overlap merge, above the final count."""

import re

from dots import META, DotEngine

from muse_fast.config import InferConfig
from muse_fast.runtime.pipeline import run_slide


def test_progress_count_is_named_as_including_overlap_duplicates(small_dots, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TQDM_MININTERVAL", "0")  # draw every update, the last one included
    cfg = InferConfig(out_dir=tmp_path, quiet=False, tissue_mask=False, batch_size=2)
    summary = run_slide(small_dots, DotEngine(), META, cfg, {"engine": "dots"})
    shown = [
        int(n.replace(",", ""))
        for n in re.findall(r"([\d,]+) nuclei incl\. tile-overlap duplicates", capsys.readouterr().err)
    ]
    assert shown, "the progress bar shows no count"
    assert shown == sorted(shown) and shown[-1] > summary.nuclei  # the dot slide has nuclei in the tile overlaps
