"""Choose a slide reader in one place: :func:`open_slide`.

``auto`` tries, for the file's extension, cuCIM (fast SVS/TIFF) -> OpenSlide -> tiffslide -> plain image, and
takes the first that opens the file. When all fail, the error lists each backend's reason.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import ConfigError, InputError
from ..metadata import file_resolution, truncation_problem
from .base import SlideReader
from .cucim_reader import CuCIMReader
from .image_reader import ImageReader
from .openslide_reader import OpenSlideReader
from .tiffslide_reader import TiffSlideReader

READERS = {r.backend: r for r in (CuCIMReader, OpenSlideReader, TiffSlideReader, ImageReader)}
SUPPORTED_SUFFIXES = sorted({s for r in READERS.values() for s in r.suffixes})


def resolve_mpp(slide: SlideReader, path: Path, override: float | None) -> float | None:
    """``--mpp`` override, else the backend's metadata, else the file's own tags; non-square pixels are refused."""
    if override is not None:
        if not override > 0:
            raise ConfigError(f"--mpp must be a positive number of microns per pixel, got {override}")
        return float(override)
    resolution = slide.resolution or file_resolution(path)
    return resolution.square_mpp(path.name) if resolution else None


def open_slide(path: str | Path, reader: str = "auto", mpp: float | None = None) -> SlideReader:
    """Open ``path`` with ``reader`` (or the first backend that works); ``mpp`` overrides the file's resolution.

    The returned reader's ``mpp`` is None when neither the backend nor the file's tags record a resolution.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"slide not found: {path}; check the path")
    if not path.is_file():
        raise InputError(f"not a file: {path}; pass a slide or image file")
    if path.stat().st_size == 0:
        raise InputError(f"empty file (0 bytes): {path}; re-copy or re-export the slide")
    if reader != "auto" and reader not in READERS:
        raise ConfigError(f"unknown reader '{reader}'; choose one of: auto, {', '.join(READERS)}")
    problem = truncation_problem(path)
    if problem:
        raise InputError(f"{path.name} is truncated ({problem}); re-copy or re-download the slide")
    suffix = path.suffix.lower()
    candidates = [READERS[reader]] if reader != "auto" else [r for r in READERS.values() if suffix in r.suffixes]
    if not candidates:
        raise InputError(f"unsupported file type '{suffix}' for {path.name}; supported: {' '.join(SUPPORTED_SUFFIXES)}")
    reasons = []
    for cls in candidates:
        try:
            slide = cls(path)
            probe_w, probe_h = slide.level_dimensions[-1]
            slide.read_region(0, 0, min(8, probe_w), min(8, probe_h), len(slide.level_dimensions) - 1)
        except Exception as exc:  # noqa: BLE001 - each backend fails in its own way; we report them all
            reasons.append(
                f"{cls.backend}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".strip()
            )
            continue
        slide.mpp = resolve_mpp(slide, path, mpp)
        return slide
    raise InputError(f"cannot read {path.name} ({'; '.join(reasons)}); check the file is a complete slide or image")


__all__ = ["READERS", "SlideReader", "open_slide"]
