"""Model-only tiles/s, interleaved rounds in one process: torch fp32, compiled bf16, static int8 (PT2E) all / guard."""
import sys, json, time
from pathlib import Path
sys.argv = ["x"]
exec(Path(__file__).with_name("pt2e.py").read_text().split("slide = shared_data_dir()")[0])
G = ["model.centre_head.out", "model.centre_head.body.0", "model.backbone.encoder.encoder.conv1"]
engines = {
    "torch:fp32": ref,
    "compiled:bf16": create_engine("compiled", EngineInputs(model, meta, sha, "cpu", 16, "bf16")),
    "int8:all": PT2EEngine(build([]), "all"),
    "int8:guard": PT2EEngine(build(G), "guard"),
}
tiles = calibration_tiles(16)
for e in engines.values():
    e.run(tiles)
rates = {k: [] for k in engines}
for r in range(5):
    for k, e in engines.items():
        t = time.perf_counter()
        for _ in range(3):
            e.run(tiles)
        rates[k].append(round(48 / (time.perf_counter() - t), 1))
print(json.dumps({"threads": torch.get_num_threads(), "tiles_per_s": rates}))
