"""The CPU decode of one batch of 16 mosaic tiles (compiled bf16 outputs) and its parts, ms a call (100 calls after one):
python decode_parts.py THREADS."""
import time, numpy as np, torch, sys
from muse_fast.model.weights import file_sha256, load_weights, resolve_weights
from muse_fast.runtime.engines import EngineInputs, create_engine
from muse_fast.post.decode import decode_flat, DecodeConfig
from muse_fast.runtime.predict import nuclei_from_dense, _owned_rows
from muse_fast.io.tiling import tile_grid
from muse_fast.kernels.peaks import find_peaks
from muse_fast.kernels.nuclei_decode import positions
from muse_fast.kernels.point_gather import gather_points
torch.set_num_threads(int(sys.argv[1]))
model, meta = load_weights(); sha = file_sha256(resolve_weights(None))
eng = create_engine("compiled", EngineInputs(model, meta, sha, "cpu", 16, "bf16"))
import tifffile
img = tifffile.imread("/tmp/brca/brca_m2c_mosaic.tif", level=0)
tiles = np.stack([img[y:y+224, x:x+224] for y in range(1000, 1000+4*200, 200) for x in range(1000, 1000+4*200, 200)])
dense = eng.run(tiles)
cfg = DecodeConfig()
def t(fn, n=100):
    fn(); a = time.perf_counter()
    for _ in range(n): fn()
    return round((time.perf_counter() - a) / n * 1e3, 3)
grid = tile_grid(4000, 4000, 224, 32)[:16]
print("nuclei_from_dense", t(lambda: nuclei_from_dense(eng, dense, grid, list(range(16)), (224,224), cfg)))
print("decode_flat", t(lambda: decode_flat(dense.centre, dense.fmap, eng.classify, (224, 224), 4, cfg)))
flat = decode_flat(dense.centre, dense.fmap, eng.classify, (224, 224), 4, cfg)
print("owned_rows", t(lambda: _owned_rows(flat, grid, list(range(16)), __import__('muse_fast.post.merge', fromlist=['x']).MergeConfig(), False)))
centre, fmap = dense.centre, dense.fmap
heat = torch.sigmoid(centre[:, 0].float())
peaks = find_peaks(heat, cfg.threshold, cfg.min_distance, cfg.max_points)
k = int(peaks.counts.max())
counts = peaks.counts
valid = torch.arange(k)[None, :] < counts[:, None]
xy = positions(peaks.yx[:, :k], centre[:, 1:3], 4)
g = gather_points(fmap, xy, (224,224), peaks.counts, out_dtype=torch.float32)
print("gather", t(lambda: gather_points(fmap, xy, (224,224), peaks.counts, out_dtype=torch.float32)), g.shape)
print("g[valid]", t(lambda: g[valid]))
feats = g[valid]
print("classify", t(lambda: eng.classify(feats)))
logits = eng.classify(feats)
print("softmax.max", t(lambda: torch.softmax(logits.float(), dim=-1).max(dim=-1)))
print("xy[valid]", t(lambda: xy[valid]))
print("scores", t(lambda: peaks.scores[:, :k].to(centre.device)[valid].float()))
m = eng.classifier.mlp
print("ln", t(lambda: m[0](feats)))
a = m[0](feats)
print("lin1", t(lambda: m[1](a)))
b = m[1](a)
print("gelu", t(lambda: m[2](b)))
c = m[2](b)
print("lin2", t(lambda: m[3](c)))
with torch.inference_mode():
  print("lin1 inference", t(lambda: m[1](a)))
  mb = torch.nn.Sequential(*m).to(torch.bfloat16)
  fb = feats.bfloat16()
  print("mlp bf16", t(lambda: mb(fb)))
print(eng.classifier)
