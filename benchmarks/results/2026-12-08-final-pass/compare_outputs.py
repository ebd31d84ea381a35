"""Every output file of the mosaic and CMU-1-Small-Region from two trees, compared byte for byte (the manifests
included): run once per tree (PYTHONPATH=<tree>, from the tree's root) into OUT/<name>, then ``--compare A B``.

    PYTHONPATH=<tree> python compare_outputs.py OUT SLIDE...
    python compare_outputs.py --compare OUT_A OUT_B
"""

import filecmp
import sys
from pathlib import Path

if sys.argv[1] == "--compare":
    a, b = Path(sys.argv[2]), Path(sys.argv[3])
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()), "different file lists"
    for f in files:
        print("same" if filecmp.cmp(a / f, b / f, shallow=False) else "DIFFERENT", f)
    sys.exit(0)

from muse_fast.config import InferConfig  # noqa: E402
from muse_fast.model.weights import file_sha256, load_weights, resolve_weights  # noqa: E402
from muse_fast.runtime.engines import EngineInputs, create_engine  # noqa: E402
from muse_fast.runtime.pipeline import run_slide  # noqa: E402

model, meta = load_weights()
engine = create_engine("compiled", EngineInputs(model, meta, file_sha256(resolve_weights(None)), "cpu", 16, "bf16"))
for slide in sys.argv[2:]:
    summary = run_slide(Path(slide), engine, meta, InferConfig(out_dir=Path(sys.argv[1]) / Path(slide).stem, quiet=True), {})
    print(slide, summary.nuclei, "nuclei")
