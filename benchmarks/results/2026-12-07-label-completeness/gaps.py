"""BRCA-M2C train: the haematoxylin detector's and the shipped weights' nuclei far from every label (an ad hoc count,
stored with its output, gaps_output.txt)."""
import numpy as np
from scipy.spatial import cKDTree
from muse_fast.model.weights import file_sha256, load_weights, resolve_weights
from muse_fast.post.decode import DecodeConfig
from muse_fast.runtime.engines import EngineInputs, create_engine
from muse_fast.runtime.predict import predict_image
from muse_fast.train.data.brca import load_split
from muse_fast.train.data.hema_nuclei import detect_haematoxylin_nuclei
model, meta = load_weights()
engine = create_engine("torch", EngineInputs(model, meta, file_sha256(resolve_weights(None)), "cpu", 16, "bf16"))
tot = dict(labels=0, hema=0, hema_far=0, hema_far_missed=0, net_far=0, net_low_far=0)
for s in load_split("train"):
    nuc = predict_image(engine, s.image, meta.tile_size, 32, DecodeConfig())
    low = predict_image(engine, s.image, meta.tile_size, 32, DecodeConfig(threshold=0.1))
    h = detect_haematoxylin_nuclei(s.image, 0.5)
    lab = cKDTree(s.xy)
    far = lab.query(h)[0] > 12
    dn = cKDTree(nuc.xy).query(h)[0] if len(nuc.xy) else np.full(len(h), np.inf)
    tot['labels'] += len(s.xy); tot['hema'] += len(h); tot['hema_far'] += int(far.sum())
    tot['hema_far_missed'] += int((far & (dn > 6)).sum())
    tot['net_far'] += int((lab.query(nuc.xy)[0] > 12).sum())
    tot['net_low_far'] += int((lab.query(low.xy)[0] > 12).sum())
print(tot)
