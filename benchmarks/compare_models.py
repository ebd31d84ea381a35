"""Model-only CPU tiles/s of registered models side by side, in one process (interleaved rounds).

    python benchmarks/compare_models.py muse_vit_t16 muse_vit_t16_stem [--batch 16] [--rounds 5] [--threads 2]

Prints JSON: the median tiles/s of each model over ``rounds`` interleaved timings of one batch, so both see the same
machine load. The numbers do not depend on the weights, so fresh models are timed.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from muse_fast.model import create_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = {name: create_model(name).eval() for name in args.models}
    x = torch.rand(args.batch, 3, 224, 224) * 255
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for model in models.values():
            model(x)  # warm-up
        for _ in range(args.rounds):
            for name, model in models.items():
                start = time.perf_counter()
                model(x)
                times[name].append(time.perf_counter() - start)
    result = {name: round(args.batch / statistics.median(t), 2) for name, t in times.items()}
    info = {"torch": torch.__version__, "threads": args.threads, "machine": platform.processor() or platform.machine()}
    print(json.dumps({"tiles_per_s": result, "batch": args.batch, "rounds": args.rounds, **info}))


if __name__ == "__main__":
    main()
