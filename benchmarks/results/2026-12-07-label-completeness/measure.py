"""How complete are BRCA-M2C's dot labels? The shipped weights' nuclei (threshold 0.3, torch bf16) that lie more than
6 or 10 um from every labelled point, per split (an ad hoc measurement, stored with its output)."""

import numpy as np
from scipy.spatial import cKDTree

from muse_fast.model.weights import file_sha256, load_weights, resolve_weights
from muse_fast.post.decode import DecodeConfig
from muse_fast.runtime.engines import EngineInputs, create_engine
from muse_fast.runtime.predict import predict_image
from muse_fast.train.data.brca import load_split

model, meta = load_weights()
engine = create_engine("torch", EngineInputs(model, meta, file_sha256(resolve_weights(None)), "cpu", 16, "bf16"))
for split in ("train", "val", "test"):
    images = load_split(split)
    far6 = far10 = found = labels = 0
    shares = []
    for s in images:
        nuc = predict_image(engine, s.image, meta.tile_size, 32, DecodeConfig())
        d, _ = cKDTree(s.xy).query(nuc.xy) if len(s.xy) else (np.full(len(nuc.xy), np.inf), None)
        far6, far10 = far6 + int((d > 6 / 0.5).sum()), far10 + int((d > 10 / 0.5).sum())
        found, labels = found + len(nuc.xy), labels + len(s.xy)
        shares.append(float((d > 10 / 0.5).mean()) if len(d) else 0.0)
    print(
        f"{split}: {len(images)} images, {labels} labels, {found} nuclei found; over 6 um from every label "
        f"{far6} ({far6 / found:.3f}), over 10 um {far10} ({far10 / found:.3f}); images where over 10% of the "
        f"nuclei found are over 10 um from every label: {sum(x > 0.1 for x in shares)}"
    )
