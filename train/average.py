"""Uniform weight averaging ("model soup") of detectors trained from the same initialisation.

    python -m train.average runs/a/final.pt runs/b/final.pt --out runs/soup.pt

Every floating parameter and buffer (BatchNorm statistics included) is the mean over the files; integer buffers
(``num_batches_tracked``) come from the first file. The files must hold the same model, classes, mpp and tile size.
Averaging only helps weights that share an initialisation and a loss basin; check the result on val
(``train.evaluate --split val``) and calibrate it (``train.calibrate``) like any other weights.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from muse_fast.errors import ConfigError
from muse_fast.model.weights import WeightsMeta, file_sha256, load_weights, save_weights

from .config import one_line_errors


def average_weights(paths: list[Path]) -> tuple[torch.nn.Module, WeightsMeta]:
    """The uniform average of the weights files ``paths`` (at least two, all of one model), as a model and meta."""
    if len(paths) < 2:
        raise ConfigError(f"averaging needs at least two weights files, got {len(paths)}")
    model, meta = load_weights(paths[0])
    total = {k: v.clone() for k, v in model.state_dict().items()}
    for path in paths[1:]:
        other, other_meta = load_weights(path)
        ours = (meta.model, meta.classes, meta.mpp, meta.tile_size)
        theirs = (other_meta.model, other_meta.classes, other_meta.mpp, other_meta.tile_size)
        if ours != theirs:
            raise ConfigError(f"{path} holds {theirs}, but {paths[0]} holds {ours}; average files of one model only")
        for key, value in other.state_dict().items():
            if value.is_floating_point():
                total[key] += value
    model.load_state_dict({k: v / len(paths) if v.is_floating_point() else v for k, v in total.items()})
    sources = [{"path": str(p), "sha256": file_sha256(p)} for p in paths]
    return model.eval(), WeightsMeta(meta.model, meta.classes, meta.mpp, meta.tile_size, {"averaged": sources})


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", type=Path, nargs="+", help="weights files written by train.finetune/calibrate")
    parser.add_argument("--out", type=Path, required=True, help="averaged weights file to write")
    parser.add_argument("--half", action=argparse.BooleanOptionalAction, default=True, help="store fp16")
    args = parser.parse_args(argv)
    if args.out.resolve() in {p.resolve() for p in args.weights}:
        raise ConfigError(f"--out {args.out} is one of the inputs; write the average to a new file")
    model, meta = average_weights(args.weights)
    save_weights(args.out, model, meta, half=args.half)
    print(f"averaged {len(args.weights)} files -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
