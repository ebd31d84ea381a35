"""Uniform weight averaging ("model soup") of detectors trained from the same initialisation.

    python -m train.average runs/a/final.pt runs/b/final.pt --out runs/soup.pt

Every floating parameter and buffer (BatchNorm statistics included) is the mean over the files; integer buffers
(``num_batches_tracked``) come from the first file. The files must hold the same model, classes, mpp and tile size,
and the same calibration folded in (``train.calibrate``), which the average keeps.
Averaging only helps weights that share an initialisation and a loss basin; check the result on val
(``train.evaluate --split val``) and calibrate it (``train.calibrate``) like any other weights.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from muse_fast.errors import ConfigError
from muse_fast.model.provenance import current_commit, file_provenance, provenance_from_config
from muse_fast.model.weights import WeightsMeta, file_sha256, load_weights, save_weights

from .config import check_output_file, one_line_errors


def folded_calibration(meta: WeightsMeta) -> dict:
    """The tau and detection threshold that ``train.calibrate`` folded into these weights ({} if none)."""
    calibration = meta.config.get("calibration") or {}
    return {k: calibration[k] for k in ("tau", "threshold") if k in calibration}


def _identity(meta: WeightsMeta) -> tuple:
    """What files must share to be averaged: model, classes, mpp and tile size."""
    return meta.model, meta.classes, meta.mpp, meta.tile_size


def average_weights(paths: list[Path]) -> tuple[torch.nn.Module, WeightsMeta]:
    """The uniform average of the weights files ``paths`` (at least two, all of one model), as a model and meta."""
    if len(paths) < 2:
        raise ConfigError(f"averaging needs at least two weights files, got {len(paths)}")
    digests = [file_sha256(p) if Path(p).is_file() else "" for p in paths]
    twice = next((p for i, p in enumerate(paths) if digests[i] and digests[i] in digests[:i]), None)
    if twice is not None:
        raise ConfigError(f"{twice} is given twice (same bytes); list each file once")
    model, meta = load_weights(paths[0])
    ours, calibration = _identity(meta), folded_calibration(meta)
    total = {k: v.clone() for k, v in model.state_dict().items()}
    for path in paths[1:]:
        other, other_meta = load_weights(path)
        if _identity(other_meta) != ours:
            raise ConfigError(
                f"{path} holds {_identity(other_meta)}, but {paths[0]} holds {ours}; average files of one model only"
            )
        if folded_calibration(other_meta) != calibration:
            raise ConfigError(
                f"{path} has calibration {folded_calibration(other_meta) or 'none'} folded in, {paths[0]} "
                f"{calibration or 'none'}; average files calibrated alike (e.g. each run's weights.pt)"
            )
        for key, value in other.state_dict().items():
            if value.is_floating_point():
                total[key] += value
    model.load_state_dict({k: v / len(paths) if v.is_floating_point() else v for k, v in total.items()})
    config = {"averaged": [{"path": str(Path(p).resolve()), "sha256": d} for p, d in zip(paths, digests, strict=True)]}
    if calibration:
        config["calibration"] = calibration  # every input has it folded in, so the average has too
    config["provenance"] = {
        **provenance_from_config(meta.model, meta.config),
        "init": {"averaged": [file_provenance(p) for p in paths]},
        "recipe": {"command": "train.average", "inputs": len(paths)},
        "commit": current_commit(),
    }
    return model.eval(), WeightsMeta(meta.model, meta.classes, meta.mpp, meta.tile_size, config)


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="train.average", description=__doc__.splitlines()[0])
    parser.add_argument("weights", type=Path, nargs="+", help="weights files written by train.finetune/calibrate")
    parser.add_argument("--out", type=Path, required=True, help="averaged weights file to write")
    parser.add_argument("--half", action=argparse.BooleanOptionalAction, default=True, help="store fp16")
    args = parser.parse_args(argv)
    check_output_file(args.out, args.weights)
    model, meta = average_weights(args.weights)
    save_weights(args.out, model, meta, half=args.half)
    print(f"averaged {len(args.weights)} files -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
