import json, statistics as st, sys
rows = []
for line in open(sys.argv[1]):
    if line.strip() == "done": continue
    side, i, js = line.split(" ", 2)
    for r in json.loads(js)["runs"]:
        rows.append((side, int(i), r))
for side, i, r in rows:
    print(side, i, r["mode"], r["end_to_end_s"], "cpu", r.get("cpu_s"), "net", r["network_calls_in_run_s"], "outside", r["outside_network_s"], "model", r["model_only_tiles_per_s"], "eff", r["pipeline_efficiency"], r["stages_s"]["peak_decode"], r["stages_s"]["writers"], r["nuclei"])
for mode in ("burn", "free"):
    for side in ("old", "new"):
        rs = [r for s, i, r in rows if s == side and r["mode"] == mode]
        if rs:
            f = lambda k: (round(min(x[k] for x in rs), 3), round(st.median(x[k] for x in rs), 3), round(max(x[k] for x in rs), 3))
            print(mode, side, len(rs), "e2e", f("end_to_end_s"), "outside", f("outside_network_s"), "eff", f("pipeline_efficiency"), "cpu", f("cpu_s"), "model", f("model_only_tiles_per_s"))
