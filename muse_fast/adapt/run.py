"""``muse-fast adapt``: annotations in, a weights file like the shipped one out (with a JSON report beside it)."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, InputError, OutputError
from ..model.registry import create_model
from ..model.weights import WeightsMeta, file_sha256, load_weights, resolve_weights, write_weights
from ..output.atomic import StagedFiles, remove_stale_partials
from ..output.regular import new_file_refused
from .annotations import class_table
from .classes import ClassesConfig, check_counts, train_classes
from .detect import BATCH, matched_features
from .full import FullConfig, adapt_full
from .inputs import load_inputs, read_windows
from .report import format_report

MODES = ("auto", "classes", "full")


@dataclass(frozen=True)
class AdaptConfig:
    inputs: tuple[Path, ...]
    annotations: Path
    out: Path
    mpp: float | None = None
    mode: str = "auto"
    weights: Path | None = None
    overwrite: bool = False
    quiet: bool = False
    # the network pass over the annotated areas: any engine of muse_fast.runtime.engines; the default is infer's
    engine: str = field(default_factory=lambda: os.environ.get("MUSE_FAST_ENGINE") or "auto")
    precision: str = "auto"
    classes: ClassesConfig = field(default_factory=ClassesConfig)
    full: FullConfig = field(default_factory=FullConfig)


def report_path(out: Path) -> Path:
    """``adapted.pt`` -> ``adapted.report.json``."""
    return out.with_name(out.stem + ".report.json")


def check_out(cfg: AdaptConfig) -> None:
    """Refuse, before any work, an ``--out`` that exists (without ``--overwrite``), is a folder or is an input."""
    out = cfg.out
    if out.is_dir() or not out.name:
        raise ConfigError(f"--out {out} is a folder; give a file name such as {out / 'adapted.pt'}")
    if out.suffix != ".pt":
        raise ConfigError(f"--out {out} must end in .pt (it is a weights file); e.g. {out.with_suffix('.pt')}")
    if out.resolve() in {p.resolve() for p in (*cfg.inputs, resolve_weights(cfg.weights))}:
        raise ConfigError(f"--out {out} is one of the inputs; write to a new file")
    if out.resolve().parent == cfg.annotations.resolve():
        raise ConfigError(
            f"--out {out} is in the --annotations folder, where its report (.json) would be read as annotations by the "
            "next run; write it to another folder"
        )
    for path in (out, report_path(out)):
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise ConfigError(f"{path} exists and is not a regular file; choose another --out")
        if path.exists() and not cfg.overwrite:
            raise ConfigError(f"{path} already exists; pass --overwrite to replace it, or choose another --out")
    parent = next((p for p in out.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ConfigError(f"--out {out} lies under the file {parent}; choose another path")
    if parent is not None:
        check_writable(parent, out)


def check_writable(folder: Path, out: Path) -> None:
    """Refuse, before minutes of work, an ``--out`` whose nearest existing folder takes no new file."""
    refused = new_file_refused(folder, out.name)
    if refused is not None:
        reason = refused.strerror or type(refused).__name__
        raise OutputError(f"--out {out}: cannot write in {folder} ({reason}); choose a folder you can write to")


def adapt(cfg: AdaptConfig) -> dict:
    """Run the adaptation and write ``cfg.out`` and its report together; returns the report."""
    start = time.time()
    if cfg.mode not in MODES:
        raise ConfigError(f"unknown --mode {cfg.mode!r}; choose one of: {', '.join(MODES)}")
    check_out(cfg)
    check_engine(cfg)
    items = load_inputs(list(cfg.inputs), cfg.annotations, cfg.mpp)
    names, colours = class_table([i.annotations for i in items])
    ids = {n: i for i, n in enumerate(names)}
    counts = np.concatenate([[ids[n] for n in i.annotations.names] for i in items]).astype(np.int64)
    check_counts(counts, names, cfg.classes.min_per_class, "annotated nuclei")
    n_regions = sum(len(i.annotations.regions) for i in items)
    mode = cfg.mode if cfg.mode != "auto" else ("full" if n_regions >= 2 else "classes")
    if mode == "full" and n_regions < 2:
        raise InputError(
            f"--mode full needs at least 2 complete regions (unclassified rectangles or polygons), found {n_regions}; "
            "draw rectangles around areas where every nucleus is marked, or use --mode classes"
        )
    base, meta = load_weights(cfg.weights)
    groups = [i.path.stem for i in items]
    windows = [w for i in items for w in read_windows(i, names, meta.mpp, cfg.mpp)]
    ignored: dict[str, int] = {}
    for item in items:
        for kind, n in item.annotations.ignored.items():
            ignored[kind] = ignored.get(kind, 0) + n
    _say(cfg, f"{len(counts)} annotated nuclei in {len(names)} classes, {n_regions} complete regions; mode {mode}")
    if ignored:
        listed = ", ".join(f"{n} {kind}{'s' if n > 1 else ''}" for kind, n in sorted(ignored.items()))
        uses = "adapt uses annotations: points, and polygons without a class as complete regions"
        _say(cfg, f"ignored {listed} ({uses})")
    clock = time.time()
    engine = network_engine(cfg, base, meta)
    data = matched_features(engine, windows, groups, meta.tile_size, meta.mpp, progress=not cfg.quiet)
    network = {"engine": engine.name, "precision": engine.precision, "seconds": round(time.time() - clock, 1)}
    del engine
    head, cls_report = train_classes(base.classifier, data, names, cfg.classes)
    model = create_model(meta.model, num_classes=len(names), img_size=meta.tile_size)
    state = {k: v for k, v in base.state_dict().items() if not k.startswith("classifier.")}
    state.update({f"classifier.{k}": v for k, v in head.state_dict().items()})
    model.load_state_dict(state)
    model.eval()
    report = {"mode": mode, "network_pass": network, "classes": cls_report, "ignored": ignored}
    if mode == "full":
        from tqdm import tqdm

        total = cfg.full.head_steps + cfg.full.network_steps
        with tqdm(total=total, desc="fine-tuning", unit="step", disable=cfg.quiet, file=sys.stderr) as bar:
            model, report["full"] = adapt_full(
                model, windows, meta.tile_size, meta.mpp, names, cfg.full, bar, cfg.classes, base.classifier
            )
    report["seconds"] = round(time.time() - start, 1)
    out_meta = WeightsMeta(meta.model, names, meta.mpp, meta.tile_size, provenance(cfg, meta, items, report), colours)
    _write(cfg.out, model, out_meta, report, cfg.overwrite)
    _say(cfg, format_report(report))
    return report


def check_engine(cfg: AdaptConfig) -> None:
    """Refuse an unknown ``--engine`` or ``--precision`` before any work (what the machine cannot run is refused
    when the engine is built)."""
    from ..runtime.engines import ENGINES
    from ..runtime.precision import check_precision

    check_precision(cfg.precision)
    if cfg.engine != "auto" and cfg.engine not in ENGINES:
        raise ConfigError(f"unknown engine '{cfg.engine}'; choose one of: auto, {', '.join(ENGINES)}")


def network_engine(cfg: AdaptConfig, base, meta: WeightsMeta):
    """The engine of the network pass, chosen as ``infer`` chooses (``auto``: the fastest measured here)."""
    from ..runtime.engines import EngineInputs, create_engine

    sha = file_sha256(resolve_weights(cfg.weights))
    return create_engine(cfg.engine, EngineInputs(base, meta, sha, "cpu", BATCH, cfg.precision))


def provenance(cfg: AdaptConfig, meta: WeightsMeta, items, report: dict) -> dict:
    """What made the file: base weights (name, hash), annotation files (hashes), mode, recipe and scores."""
    from .. import __version__

    base = resolve_weights(cfg.weights)
    summary = {k: v for k, v in report.items() if k != "full"}
    if "full" in report:
        summary["full"] = {k: v for k, v in report["full"].items() if k != "log"}
    return {
        "adapt": {
            "muse_fast_version": __version__,
            "base_weights": base.name,
            "base_sha256": file_sha256(base),
            "inputs": [i.path.name for i in items],
            "annotations": {i.annotations.source.name: file_sha256(i.annotations.source) for i in items},
            "mpp_override": cfg.mpp,
            "mode": report["mode"],
            "recipe": {"classes": _plain(asdict(cfg.classes)), "full": _plain(asdict(cfg.full))},
            "metrics": summary,
        },
        "base_config": meta.config,
    }


def _plain(value):
    return json.loads(json.dumps(value, default=str))


def _write(out: Path, model, meta: WeightsMeta, report: dict, overwrite: bool) -> None:
    """The weights (fp16, as the shipped file) and the report under temporary names, then both renamed; without
    ``overwrite`` never over a file that appeared while this ran (the check in :func:`check_out` was at the start)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(out.parent, [out.name, report_path(out).name], dead_only=True)  # a killed run's
    with StagedFiles() as staged:
        with staged.open(out, "wb") as fh:
            write_weights(fh, model, meta, half=True)
        with staged.open(report_path(out), "w") as fh:
            fh.write(json.dumps(_plain(report), indent=2) + "\n")
        staged.commit(replace=overwrite)


def _say(cfg: AdaptConfig, text: str) -> None:
    if not cfg.quiet:
        print(text, file=sys.stderr)
