"""adapt --mode full with FullConfig overrides: run_full.py OUT MPP INPUTS_FILE ANNOT key=val..."""

import sys
from pathlib import Path

from muse_fast.adapt.full import FullConfig
from muse_fast.adapt.run import AdaptConfig, adapt

out, mpp, inputs, ann = sys.argv[1:5]
kw = {}
for a in sys.argv[5:]:
    k, v = a.split("=")
    d = getattr(FullConfig, k)
    kw[k] = (v.lower() in ("1", "true")) if isinstance(d, bool) else type(d)(v)
cfg = AdaptConfig(
    tuple(Path(p) for p in open(inputs).read().split()),
    Path(ann),
    Path(out),
    float(mpp),
    "full",
    overwrite=True,
    quiet=True,
    full=FullConfig(**kw),
)
adapt(cfg)
