"""The results.md table of the network-stage variants, from var.sh's output folder."""

import json
import os

D = "/tmp/exp/bn"  # var.sh's output folder
EMA = (
    "weights averaged in both stages (EMA, momentum warmed up towards 0.98: 0.97 at step 300), "
    "the average scored and kept"
)
ROWS = [
    ("default (network lr 1e-4)", "2025", "base"),
    ("BatchNorm statistics frozen in the network stage", "2025", "fbn"),
    (EMA, "2025", "ema"),
    ("network lr 3e-4", "2025", "lr3"),
    ("network lr 1e-3", "2025", "lr10"),
    ("default (network lr 1e-4)", "7", "base_s7"),
    ("network lr 3e-4", "7", "lr3_s7"),
]
SETS = [("nucls", "NuCLS"), ("shiftn", "shifted-nucls"), ("s7", "shifted")]


def cells(tag: str) -> list[str] | None:
    """Test and held-out cells of one variant over the three sets; None if a run is missing."""
    out = []
    for prefix, _ in SETS:
        path = f"{D}/{prefix}_{tag}.score.json"
        if not os.path.exists(path):
            return None
        score = json.load(open(path))
        test = score["hungarian"]
        report = json.load(open(f"{D}/{prefix}_{tag}.report.json"))
        full = report.get("full", report)
        held = full["held_out"][full["chosen"]]
        out.append(f"{test['det_f1']:.3f} / {test['macro_f1']:.3f} ({score['agreement_on_matched']:.2f})")
        out.append(f"{held['det_f1']:.3f} / {held['macro_f1']:.3f} ({full['chosen']})")
    return out


header = " | ".join(f"{name} test det F1 / macro F1 (agreement) | {name} held out" for _, name in SETS)
print(f"| variant | seed | {header} |")
print("|---|---|" + "---|---|" * len(SETS))
for name, seed, tag in ROWS:
    row = cells(tag)
    if row is not None:
        print(f"| {name} | {seed} | " + " | ".join(row) + " |")
