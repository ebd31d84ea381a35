"""Outputs of run_slide with the CPU decode in flat rows against the tile-by-tile reference path, in one process
(the compiled engine's outputs replayed, so both paths decode the same network outputs), embeddings on: SHA-256 of
each file (first 12 hex digits). Run at commit c4a8e92:

    python compare_outputs.py SLIDE [SLIDE ...]
"""

import hashlib
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/, for amx_standin
from amx_standin import ReplayEngine  # noqa: E402

from muse_fast.config import InferConfig
from muse_fast.model.weights import file_sha256, load_weights, resolve_weights
from muse_fast.post.decode import decode_batch
from muse_fast.runtime import pipeline as P
from muse_fast.runtime import predict
from muse_fast.runtime.engines import EngineInputs, create_engine

model, meta = load_weights()
real = create_engine("compiled", EngineInputs(model, meta, file_sha256(resolve_weights(None)), "cpu", 16, "bf16"))
eng = ReplayEngine(real)
flat = predict.nuclei_from_dense


def ref(engine, dense, tiles, ids, hw, cfg, stride=4, merge=predict.MergeConfig(), features=False):
    return predict.nuclei_per_tile(
        decode_batch(dense.centre, dense.fmap, engine.classify, hw, stride, cfg), tiles, ids, merge, features
    )


for slide in sys.argv[1:]:
    digests = {}
    for name, fn in [("flat", flat), ("reference", ref), ("flat2", flat)]:
        predict.nuclei_from_dense = fn
        with tempfile.TemporaryDirectory() as tmp:
            cfg = InferConfig(out_dir=Path(tmp), batch_size=16, quiet=True, embeddings=True)
            s = P.run_slide(Path(slide), eng, meta, cfg, {"engine": "x"})
            digests[name] = {
                p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:12]
                for p in sorted(Path(tmp).iterdir())
                if p.is_file() and not p.name.endswith(".json")
            }
            print(slide, name, s.nuclei, digests[name], flush=True)
    print("identical:", digests["flat"] == digests["reference"])
