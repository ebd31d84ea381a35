"""What determines a slide's results: the input file, the settings and the weights.

Checkpointed batches and finished outputs are reused only under an equal fingerprint. The file is identified by its
content: its size and a SHA-256 of its first and last MiB. That is cheap on any slide and changes when a file is
replaced, even by another of the same size; a copy, an unzip or a ``touch`` (a new mtime, the same bytes) does not
change it, so a finished slide stays finished.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

from ..config import InferConfig
from ..model.weights import WeightsMeta

IDENTITY_BYTES = 1 << 20  # hashed at each end of the file
# Settings that add output files without changing a nucleus. A slide done without one is run again when a run asks
# for it (its other files come out the same); one done with it is done for a run that does not ask.
OUTPUT_SETTINGS = ("embeddings",)


def file_identity(path: Path) -> dict:
    """``size`` and ``head_tail_sha256`` of ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        digest.update(fh.read(IDENTITY_BYTES))
        if st.st_size > IDENTITY_BYTES:
            fh.seek(max(IDENTITY_BYTES, st.st_size - IDENTITY_BYTES))
            digest.update(fh.read(IDENTITY_BYTES))
    return {"size": st.st_size, "head_tail_sha256": digest.hexdigest()}


# keys (flattened) that a fingerprint leaves out at these values, so that older manifests stay valid
OMITTED_DEFAULTS = {"precision": "fp32", "settings.embeddings": False, "settings.tta": False}


def settings_fingerprint(cfg: InferConfig) -> dict:
    """The settings that change a slide's nuclei (not the output folder, threads, batch size or verbosity)."""
    return {
        "decode": asdict(cfg.decode),
        "overlap": cfg.overlap,
        "tissue_mask": cfg.tissue_mask,
        "skip_background": cfg.skip_background,
        "reader": cfg.reader,
        "device": cfg.device,
        **({"embeddings": True} if cfg.embeddings else {}),  # only when on: older manifests stay valid
        **({"tta": True} if cfg.tta else {}),  # changes nuclei; the engine's name says it too
    }


def precision_fingerprint(engine: object) -> dict:
    """``{"precision": p}`` for an engine running below fp32, else ``{}``.

    Results at another precision are never mixed on resume nor taken for finished. fp32 adds nothing, so results
    written before engines had a precision (all fp32 on the CPU) stay valid.
    """
    precision = getattr(engine, "precision", "fp32")
    return {} if precision == "fp32" else {"precision": precision}


def slide_fingerprint(
    path: Path, cfg: InferConfig, meta: WeightsMeta, mpp: float | None, extra: dict | None = None
) -> dict:
    """Everything a slide's outputs depend on, JSON-normalised; ``extra`` is the caller's (weights hash, engine)."""
    fingerprint = {
        **(extra or {}),
        "settings": settings_fingerprint(cfg),
        "model": {"name": meta.model, "classes": list(meta.classes), "mpp": meta.mpp, "tile_size": meta.tile_size},
        "mpp_override": mpp,
        "file": file_identity(path),
    }
    return json.loads(json.dumps(fingerprint, sort_keys=True, default=str))


def nuclei_part(fingerprint: dict) -> dict:
    """``fingerprint`` without the output-only settings (those that add files, not change nuclei)."""
    settings = {k: v for k, v in fingerprint.get("settings", {}).items() if k not in OUTPUT_SETTINGS}
    return {**fingerprint, "settings": settings}


def same_nuclei(old: dict, new: dict) -> bool:
    """Whether two fingerprints give the same nuclei (they may differ in :data:`OUTPUT_SETTINGS`)."""
    return nuclei_part(old) == nuclei_part(new)


def missing_outputs(done: dict, wanted: dict) -> list[str]:
    """The output settings that ``wanted`` turns on and the run of ``done`` did not have."""
    had, want = done.get("settings", {}), wanted.get("settings", {})
    return [k for k in OUTPUT_SETTINGS if want.get(k) and not had.get(k)]


def _flat(value: object, prefix: str = "") -> dict[str, object]:
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict[str, object] = {}
    for key, item in value.items():
        out.update(_flat(item, f"{prefix}.{key}" if prefix else str(key)))
    return out


def differences(old: dict, new: dict, limit: int = 3) -> str:
    """What changed between two fingerprints, for a one-line message (``decode.threshold 0.3 -> 0.5``)."""
    a, b = _flat(old), _flat(new)
    for flat in (a, b):  # settings left out of fingerprints at their defaults: name them
        for key, default in OMITTED_DEFAULTS.items():
            flat.setdefault(key, default)
    changed = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    parts = ["the slide file changed"] if any(k.startswith("file.") for k in changed) else []
    parts += [f"{k.removeprefix('settings.')} {a.get(k)} -> {b.get(k)}" for k in changed if not k.startswith("file.")]
    return "; ".join(parts[:limit] + (["..."] if len(parts) > limit else [])) or "none"
