"""Our weights files: a dict with the model name, classes, mpp, tile size, state dict and the training config."""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import torch

from ..errors import WeightsError
from ..output.atomic import atomic_write, signals_held
from ..post.classes import ClassName
from .registry import MODELS, MuseNet, create_model
from .weights_checks import FIX, check_classes, check_model_mpp, check_state_dict, check_tile_size

FORMAT_VERSION = 1
DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "muse_r18_brca_m2c.pt"


@dataclass(frozen=True)
class WeightsMeta:
    model: str
    classes: tuple[str, ...]
    mpp: float  # microns per pixel the network was trained at
    tile_size: int  # input side the network was trained at
    config: dict = field(default_factory=dict)  # resolved training config, for provenance
    colours: tuple[tuple[int, int, int], ...] = ()  # display colour (RGB) per class; empty = the defaults


def state_dict_mismatch(own: dict, loaded: dict) -> str | None:
    """One-line description of how ``loaded`` differs from ``own`` (missing, unexpected, shape), or None."""
    missing = [k for k in own if k not in loaded]
    extra = [k for k in loaded if k not in own]
    shapes = [
        f"{k} {tuple(loaded[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in loaded and tuple(loaded[k].shape) != tuple(own[k].shape)
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if extra:
        parts.append(f"{len(extra)} unexpected (e.g. {extra[0]})")
    if shapes:
        parts.append(f"{len(shapes)} with other shapes (e.g. {shapes[0]})")
    return "; ".join(parts) or None


def save_weights(path: str | Path, model: MuseNet, meta: WeightsMeta, half: bool = False) -> None:
    """Write weights atomically (temp file + rename). ``half`` stores floating tensors as fp16."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as fh:
        write_weights(fh, model, meta, half)


def write_weights(fh: IO[bytes], model: MuseNet, meta: WeightsMeta, half: bool = False) -> None:
    """The weights file's bytes into an open file (a staged temporary one: :func:`save_weights` or a caller's
    :class:`~muse_fast.output.atomic.StagedFiles`). ``half`` stores floating tensors as fp16."""
    state = {
        k: (v.half() if half and v.is_floating_point() else v).detach().cpu() for k, v in model.state_dict().items()
    }
    payload = {
        "format_version": FORMAT_VERSION,
        "model": meta.model,
        "classes": list(meta.classes),
        "mpp": float(meta.mpp),
        "tile_size": int(meta.tile_size),
        "config": meta.config,
        "state_dict": state,
    }
    if meta.colours:
        payload["colours"] = [list(map(int, c)) for c in meta.colours]
    with signals_held():  # Ctrl-C inside torch.save would surface as its RuntimeError
        torch.save(payload, fh)


def resolve_weights(path: str | Path | None) -> Path:
    """The weights file to use: ``path``, or the shipped default."""
    return Path(path) if path is not None else DEFAULT_WEIGHTS


def load_weights(path: str | Path | None = None) -> tuple[MuseNet, WeightsMeta]:
    """Load a weights file (default: the shipped BRCA-M2C model) into a float32 ``MuseNet`` in eval mode."""
    path = resolve_weights(path)
    if path.is_dir():
        raise WeightsError(f"weights {path} is a folder; pass --weights PATH to a file written by train.finetune")
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}; pass --weights PATH to a file written by train.finetune")
    damaged = _damaged_member(path)
    if damaged:
        raise WeightsError(f"weights {path} are damaged ({damaged}); copy the file again or retrain")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the file is not ours
        raise WeightsError(
            f"cannot read weights {path}: {type(exc).__name__}; pass a file written by train.finetune"
        ) from None
    if not isinstance(payload, dict) or "state_dict" not in payload or "model" not in payload:
        raise WeightsError(
            f"{path} is not a muse-fast weights file (no 'model'/'state_dict'); "
            "use train.finetune output, or load_official_checkpoint for MUSE .pth backbones"
        )
    missing = [k for k in ("classes", "mpp", "tile_size") if k not in payload]
    if missing:
        raise WeightsError(f"{path} lacks {', '.join(missing)}; write weights with train.finetune or save_weights")
    meta = with_colours(checked_meta(payload, path.name), payload.get("colours"), path.name)
    state = check_state_dict(payload["state_dict"], path.name)
    model = create_model(meta.model, num_classes=len(meta.classes), img_size=meta.tile_size)
    own = model.state_dict()
    problem = state_dict_mismatch(own, state)
    if problem:
        raise WeightsError(
            f"weights {path.name} do not fit model '{meta.model}': {problem}; retrain or pass the matching --weights"
        )
    not_finite = next((k for k, v in state.items() if v.is_floating_point() and not v.isfinite().all()), None)
    if not_finite:
        raise WeightsError(f"weights {path.name} hold NaN or inf (in {not_finite}); the training diverged, retrain")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
    return model.eval(), meta


def checked_meta(payload: dict, name: str) -> WeightsMeta:
    """The metadata of a loaded weights payload, each field checked (:mod:`.weights_checks`)."""
    model, config = payload["model"], payload.get("config", {})
    if not isinstance(model, str):
        raise WeightsError(
            f"weights {name} record model {model!r:.60}; it must be a model name; choose one of: {', '.join(MODELS)}"
        )
    if not isinstance(config, dict):
        raise WeightsError(f"weights {name} record a config of type {type(config).__name__}, not a dict; {FIX}")
    classes = check_classes(payload["classes"], name)
    return WeightsMeta(
        model, classes, check_model_mpp(payload["mpp"], name), check_tile_size(payload["tile_size"], name), config
    )


def with_colours(meta: WeightsMeta, colours, name: str) -> WeightsMeta:
    """``meta`` with the class colours a file records (``muse-fast adapt`` keeps QuPath's); the classes become
    :class:`ClassName` so that every writer draws them in those colours."""
    if not colours:
        return meta
    if not isinstance(colours, list) or len(colours) != len(meta.classes):
        raise WeightsError(
            f"weights {name} record colours that do not match their {len(meta.classes)} classes; write the file again "
            "with muse-fast adapt"
        )
    try:
        rgb = tuple(tuple(min(255, max(0, int(v))) for v in c[:3]) for c in colours)
    except (TypeError, ValueError):
        raise WeightsError(
            f"weights {name} record colours that are not RGB triples; write the file again with muse-fast adapt"
        ) from None
    classes = tuple(ClassName(n, c) for n, c in zip(meta.classes, rgb))
    return WeightsMeta(meta.model, classes, meta.mpp, meta.tile_size, meta.config, rgb)


def _damaged_member(path: Path) -> str | None:
    """Why a torch zip file fails its CRC checks (torch.load does not check them), or None if it passes or is no zip."""
    if not zipfile.is_zipfile(path):
        return None  # torch.load refuses what is not a checkpoint
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return f"checksum mismatch in {bad}" if bad else None


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
