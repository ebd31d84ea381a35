"""Medians and ranges of the stand-in runs in this folder (old_*.log, new_*.log), as rule.txt says."""

import json
import statistics
from pathlib import Path

here = Path(__file__).parent
keys = ["end_to_end_s", "outside_network_s", "network_calls_in_run_s", "model_only_tiles_per_s", "pipeline_efficiency"]
for side in ("old", "new"):
    runs = []
    for log in sorted(here.glob(f"{side}_*.log")):
        runs += [json.loads(line) for line in log.read_text().splitlines() if line.startswith('{"mode"')]
    burn = [r for r in runs if r["mode"] == "burn"]
    free = [r for r in runs if r["mode"] == "free"]
    print(f"{side}: {len(burn)} burn runs, {len(free)} free runs, nuclei {sorted({r['nuclei'] for r in runs})}")
    for k in keys:
        v = [r[k] for r in burn]
        print(f"  burn {k}: median {statistics.median(v):.3f}, {min(v):.3f}-{max(v):.3f}")
    if burn:
        reached = sum(r["pipeline_efficiency"] >= 0.85 for r in burn)
        print(f"  burn runs at 0.85 of model only or above: {reached} of {len(burn)}")
    for k, get in (("end_to_end_s", lambda r: r["end_to_end_s"]), ("writers stage", lambda r: r["stages_s"]["writers"])):
        v = [get(r) for r in free]
        print(f"  free {k}: median {statistics.median(v):.3f}, {min(v):.3f}-{max(v):.3f}")
