"""Static int8 of the compiled network through torchao PT2E + inductor, against fp32: nuclei kept, extra, classes."""
import json, sys, time
from pathlib import Path
import numpy as np, torch
import torch._inductor.config as icfg
from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e, convert_pt2e
import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
from muse_fast.model.registry import DenseOutputs
from muse_fast.model.weights import file_sha256, load_weights, resolve_weights
from muse_fast.runtime.engines import EngineInputs, create_engine
from muse_fast.runtime.compiled import TileNet
from train.precision_gate import calibration_tiles, paired_within, slide_nuclei, f1_scores, POSITION_TOLERANCE_PX
from train.evaluate import EvalConfig
from train.data.paths import shared_data_dir

torch.set_num_threads(2)
model, meta = load_weights(); sha = file_sha256(resolve_weights(None))
inputs = EngineInputs(model, meta, sha, "cpu", 16, "fp32")
ref = create_engine("torch", inputs)
B = 16

class PT2EEngine:
    def __init__(self, fn, name):
        self.fn, self.name, self.device, self.precision = fn, name, torch.device("cpu"), "int8"
    @torch.inference_mode()
    def run(self, tiles):
        x = torch.from_numpy(np.ascontiguousarray(tiles)); n = len(x)
        parts = []
        for s in range(0, n, B):
            c = x[s:s+B]; short = B - len(c)
            if short: c = torch.cat([c, c.new_full((short, *c.shape[1:]), 255)])
            centre, fmap = self.fn(c)
            parts.append((centre[:len(c)-short].float(), fmap[:len(c)-short].float()))
        return DenseOutputs(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))
    def classify(self, feats):
        return ref.classify(feats)

class FP32Net(torch.nn.Module):
    """TileNet at fp32 without its autocast block (export would wrap it in a higher-order op)."""
    def __init__(self, model):
        super().__init__(); self.model = model
    def forward(self, tiles):
        out = self.model(tiles.permute(0, 3, 1, 2).float())
        return out.centre.float(), out.fmap

for _m in model.modules():
    if isinstance(_m, torch.nn.ReLU):
        _m.inplace = False

import types
def _split_relu(block):
    """The encoder's BasicBlock (muse_fast/model/resnet.py) calls one ReLU module twice; the quantizer's partitions need one module per call."""
    block.act_out = torch.nn.ReLU()
    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act(self.bn1(self.conv1(x)))
        return self.act_out(self.bn2(self.conv2(x)) + shortcut)
    block.forward = types.MethodType(forward, block)
from muse_fast.model.resnet import BasicBlock
for _m in model.modules():
    if isinstance(_m, BasicBlock):
        _split_relu(_m)

def build(skip):
    net = FP32Net(model).eval()
    example = torch.full((B, 224, 224, 3), 128, dtype=torch.uint8)
    ep = torch.export.export(net, (example,)).module()
    q = xiq.X86InductorQuantizer()
    q.set_global(xiq.get_default_x86_inductor_quantization_config())
    for name in skip:
        q.set_module_name_qconfig(name, None)
    prepared = prepare_pt2e(ep, q)
    cal = calibration_tiles()
    with torch.no_grad():
        for s in range(0, len(cal), B):
            prepared(torch.from_numpy(cal[s:s+B]))
    conv = convert_pt2e(prepared)
    icfg.freezing = True
    t = time.perf_counter()
    fn = torch.compile(conv)
    with torch.no_grad():
        fn(example)
    print(f"compiled in {time.perf_counter()-t:.0f}s", flush=True)
    return fn

def speed(eng, tiles, rounds=3):
    eng.run(tiles)
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(5): eng.run(tiles)
        out.append(5 * len(tiles) / (time.perf_counter() - t))
    return [round(v, 1) for v in out]

slide = shared_data_dir() / "wsi" / "CMU-1-Small-Region.svs"
cfg = EvalConfig(tile_size=meta.tile_size)
ref_nuc = slide_nuclei(ref, meta, slide)
ref_val = f1_scores(model, ref, "val", cfg)["mcspatnet"]
print("ref", len(ref_nuc), ref_val, flush=True)
tiles = calibration_tiles(16)
variants = {name: [s for s in spec.split(",") if s] for name, spec in (v.split("=") for v in sys.argv[1:])}
for name, skip in variants.items():
    eng = PT2EEngine(build(skip), name)
    nuc = slide_nuclei(eng, meta, slide)
    p = paired_within(ref_nuc.xy, nuc.xy, POSITION_TOLERANCE_PX)
    same = ref_nuc.class_id[p.pop("pairs")] == nuc.class_id[p.pop("partner")]
    val = f1_scores(model, eng, "val", cfg)["mcspatnet"]
    res = {"variant": name, "skip": skip, "n_ref": p["n_ref"], "n": p["n"], "kept": round(p["paired"] / p["n_ref"], 4),
           "extra": round((p["n"] - p["paired"]) / p["n_ref"], 4), "classes_equal": round(float(same.mean()), 4),
           "val": val, "tiles_per_s": speed(eng, tiles)}
    print(json.dumps(res), flush=True)
print(json.dumps({"ref_val": ref_val, "ref_tiles_per_s": speed(ref, tiles)}))
