"""What a weights file must hold before anything is built from it: each wrong field is one line naming the fix.

Checked on load (:func:`muse_fast.model.weights.load_weights`), before the network is built: class names (unique,
non-empty text that encodes as UTF-8), the tile size (an int, a positive multiple of the network's input stride and
larger than the tile overlap), the model's mpp (a positive number in the usual range) and the state
dict (a mapping of parameter names to tensors).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..errors import WeightsError

INPUT_STRIDE = 32  # MuseNet's input sides must be multiples of 32 (the ResNet's stride; 2 ViT patches)
FIX = "write weights with train.finetune or save_weights"


def _kind(value: object) -> str:
    return type(value).__name__


def check_classes(classes: object, name: str) -> tuple[str, ...]:
    """Unique, non-empty class names that encode as UTF-8 (no lone surrogates), as a tuple."""
    if isinstance(classes, (str, bytes)) or not isinstance(classes, (list, tuple)) or not classes:
        raise WeightsError(
            f"weights {name} record classes {_short(classes)}; they must be a non-empty list of names; {FIX}"
        )
    for i, value in enumerate(classes):
        if not isinstance(value, str) or not value.strip():
            raise WeightsError(
                f"weights {name}: class {i} is {_short(value)} ({_kind(value)}); every class must be a non-empty "
                f"name; {FIX}"
            )
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise WeightsError(
                f"weights {name}: class {i} ({value.encode('utf-8', 'backslashreplace').decode()}) is not valid "
                f"text (a lone surrogate); {FIX}"
            ) from None
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
        raise WeightsError(
            f"weights {name} name the class {', '.join(map(repr, repeated))} more than once; every class needs its own "
            f"name (the outputs are keyed by it); {FIX}"
        )
    return tuple(classes)


def check_tile_size(size: object, name: str) -> int:
    """An int, a positive multiple of :data:`INPUT_STRIDE`, larger than the tiles' overlap (``InferConfig``)."""
    from ..config import InferConfig

    overlap = InferConfig.overlap
    if not isinstance(size, int) or isinstance(size, bool):
        raise WeightsError(f"weights {name} record tile_size {_short(size)} ({_kind(size)}); it must be an int; {FIX}")
    if size <= overlap or size % INPUT_STRIDE:
        raise WeightsError(
            f"weights {name} record tile_size {size}; it must be a multiple of {INPUT_STRIDE} larger than the "
            f"{overlap}-px tile overlap (e.g. 224); {FIX}"
        )
    return size


def check_model_mpp(mpp: object, name: str) -> float:
    """A positive, finite number within ``PLAUSIBLE_MPP`` (a model at 0.001 um/px would plan hours of tiles)."""
    from ..config import PLAUSIBLE_MPP, valid_mpp

    if not valid_mpp(mpp):
        raise WeightsError(
            f"weights {name} record mpp {_short(mpp)}; it must be the positive microns per pixel the network was "
            f"trained at (0.5 for BRCA-M2C); {FIX}"
        )
    if not PLAUSIBLE_MPP[0] <= mpp <= PLAUSIBLE_MPP[1]:  # no scanner images at that scale: a damaged file
        raise WeightsError(
            f"weights {name} record mpp {mpp:g}, outside the {PLAUSIBLE_MPP[0]:g}-{PLAUSIBLE_MPP[1]:g} um/px of real "
            f"slides (every slide would be resampled to it); {FIX}"
        )
    return float(mpp)


def check_state_dict(state: object, name: str) -> Mapping[str, torch.Tensor]:
    """A mapping of parameter names (str) to tensors."""
    if not isinstance(state, Mapping):
        raise WeightsError(
            f"weights {name}: the state_dict is a {_kind(state)}, not a mapping of names to tensors; {FIX}"
        )
    bad = next(((k, v) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        key, value = bad
        raise WeightsError(
            f"weights {name}: state_dict entry {_short(key)} holds a value of type {_kind(value)}, not a tensor "
            f"({len(state)} entries); {FIX}"
        )
    return state


def _short(value: object, limit: int = 60) -> str:
    """``repr`` cut to ``limit`` characters, so that a hostile value cannot make a long message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
