"""The compiled bf16 engine (what --engine auto runs on bf16 CPUs) against fp32 on pt2e.py's measure, for comparison."""
import json
import sys
from pathlib import Path

sys.argv = ["x"]
exec(Path(__file__).with_name("pt2e.py").read_text().split("tiles = calibration_tiles(16)")[0])
eng = create_engine("compiled", EngineInputs(model, meta, sha, "cpu", 16, "bf16"))
nuc = slide_nuclei(eng, meta, slide)
p = paired_within(ref_nuc.xy, nuc.xy, POSITION_TOLERANCE_PX)
same = ref_nuc.class_id[p.pop("pairs")] == nuc.class_id[p.pop("partner")]
val = f1_scores(model, eng, "val", cfg)["mcspatnet"]
print(json.dumps({"variant": "compiled:bf16", "n_ref": p["n_ref"], "n": p["n"], "kept": round(p["paired"] / p["n_ref"], 4),
                  "extra": round((p["n"] - p["paired"]) / p["n_ref"], 4), "classes_equal": round(float(same.mean()), 4),
                  "val": val}))
