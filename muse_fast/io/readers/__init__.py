"""Choose a slide reader in one place: :func:`open_slide`.

``auto`` tries, for the file's extension, cuCIM (fast SVS/TIFF) -> OpenSlide -> tiffslide -> plain image, and
takes the first that opens the file without warning that it changes the pixel format (cuCIM's "slow-path" load of
16-bit, palette or CMYK TIFFs misplaces regions). When all fail, the error lists each backend's reason. Grayscale
files are refused: the network needs H&E colour.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from ...errors import ConfigError, InputError, one_line
from ...output.text import printable
from ..metadata import file_resolution, truncation_problem
from ..native_output import capture_native_output
from .base import SlideReader
from .cucim_reader import CuCIMReader
from .image_reader import ImageReader
from .openslide_reader import OpenSlideReader
from .tiffslide_reader import TiffSlideReader

READERS = {r.backend: r for r in (CuCIMReader, OpenSlideReader, TiffSlideReader, ImageReader)}
log = logging.getLogger(__name__)
SUPPORTED_SUFFIXES = sorted({s for r in READERS.values() for s in r.suffixes})


def resolve_mpp(slide: SlideReader, path: Path, override: float | None) -> float | None:
    """``--mpp`` override, else the backend's metadata, else the file's own tags; non-square pixels are refused."""
    if override is not None:
        if not override > 0:
            raise ConfigError(f"--mpp must be a positive number of microns per pixel, got {override}")
        _say_if_overridden(slide, path, float(override))
        return float(override)
    return recorded_mpp(slide, path)


def recorded_mpp(slide: SlideReader, path: Path) -> float | None:
    """The resolution the backend's metadata, else the file's own tags, record; non-square pixels are refused."""
    resolution = slide.resolution or file_resolution(path)
    return resolution.square_mpp(path.name) if resolution else None


def _say_if_overridden(slide: SlideReader, path: Path, override: float) -> None:
    """One warning when the file records a resolution more than 10% away from ``--mpp``: right for a file whose tags
    are wrong, a mistake for the others of a cohort that records theirs (they run at the wrong scale)."""
    try:
        recorded = recorded_mpp(slide, path)
    except Exception:  # noqa: BLE001 - tags it cannot use: nothing to compare with
        return
    if recorded and abs(recorded / override - 1) > 0.1:
        log.warning(
            "%s records %.4g um/px; --mpp %g overrides it (a scale %.2gx off what the file says)",
            printable(path.name),
            recorded,
            override,
            recorded / override,
        )


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
        raise InputError(f"{path.name} is truncated or damaged ({problem}); re-copy or re-download the slide")
    suffix = path.suffix.lower()
    candidates = [READERS[reader]] if reader != "auto" else [r for r in READERS.values() if suffix in r.suffixes]
    if not candidates:
        raise InputError(f"unsupported file type '{suffix}' for {path.name}; supported: {' '.join(SUPPORTED_SUFFIXES)}")
    with capture_native_output() as native:
        slide, reasons = _first_that_opens(candidates, path, native)
    if slide is None:
        raise InputError(f"cannot read {path.name} ({'; '.join(reasons)}); check the file is a complete slide or image")
    try:
        _refuse_grayscale(slide)
        slide.mpp = resolve_mpp(slide, path, mpp)
    except BaseException:
        slide.close()
        raise
    return slide


FAST_READER_INSTALL = {"cucim": "pip install --no-deps cucim-cu13==26.10.0"}
_warned: set[str] = set()


def _warn_missing_fast_reader(backend: str) -> None:
    if backend not in _warned:
        _warned.add(backend)
        log.warning(
            "%s is not installed: slides are read with a slower backend; install it with: %s",
            backend,
            FAST_READER_INSTALL[backend],
        )


FORMAT_CHANGE = re.compile(r"slow-path|pixel format", re.IGNORECASE)  # cuCIM's warning before it misreads a file


def _first_that_opens(candidates: list, path: Path, native) -> tuple[SlideReader | None, list[str]]:
    """The first backend that opens ``path``, reads a probe and does not warn about changing the pixel format."""
    reasons = []
    for cls in candidates:
        mark = native.offset()
        try:
            slide = cls(path)
            probe_w, probe_h = slide.level_dimensions[-1]
            slide.read_region(0, 0, min(8, probe_w), min(8, probe_h), len(slide.level_dimensions) - 1)
        except Exception as exc:  # noqa: BLE001 - each backend fails in its own way; we report them all
            reasons.append(f"{cls.backend}: {one_line(exc)}")
            if isinstance(exc, ModuleNotFoundError) and cls.backend in FAST_READER_INSTALL:
                _warn_missing_fast_reader(cls.backend)
            continue
        warning = next((line for line in native.since(mark).splitlines() if FORMAT_CHANGE.search(line)), None)
        problem = f"changes the pixel format ({warning.strip()[:100]})" if warning else _colour_mismatch(slide, path)
        if problem:
            slide.close()
            reasons.append(f"{cls.backend}: {problem}")
            log.info("%s: not read with %s, which %s", path.name, cls.backend, problem)
            continue
        return slide, reasons
    return None, reasons


CROSS_CHECK = {"cucim": ("openslide", "tiffslide")}  # cuCIM skips the YCbCr->RGB step some JPEG TIFFs need
COLOUR_TOLERANCE = 12.0  # mean |difference| (0-255) between decoders beyond which colours are wrong, not rounding
CROSS_CHECK_SIDE = 512


def _colour_mismatch(slide: SlideReader, path: Path) -> str | None:
    """Whether ``slide`` decodes a central level-0 region in other colours than a reference backend does."""
    for name in CROSS_CHECK.get(slide.backend, ()):
        try:
            reference = READERS[name](path)
        except Exception:  # noqa: BLE001 - that reference cannot read the file; try the next one
            continue
        try:
            w, h = slide.level_dimensions[0]
            side_w, side_h = min(w, CROSS_CHECK_SIDE), min(h, CROSS_CHECK_SIDE)
            x, y = (w - side_w) // 2, (h - side_h) // 2
            ours = slide.read_region(x, y, side_w, side_h, 0).astype(np.int16)
            theirs = reference.read_region(x, y, side_w, side_h, 0).astype(np.int16)
        except Exception:  # noqa: BLE001 - damaged data: the tile reads name it later
            return None
        finally:
            reference.close()
        difference = float(np.abs(ours - theirs).mean())
        if difference > COLOUR_TOLERANCE:
            return f"decodes colours unlike {name} (mean difference {difference:.0f} of 255)"
        return None
    return None


GRAY_PROBE_PIXELS = 4_000_000  # the coarsest level is checked whole up to this size, else its centre


def _refuse_grayscale(slide: SlideReader) -> None:
    """H&E needs colour: a slide whose coarsest level has R == G == B everywhere (and is not flat) is refused."""
    level = len(slide.level_dimensions) - 1
    w, h = slide.level_dimensions[level]
    side = int(GRAY_PROBE_PIXELS**0.5)
    cw, ch = (w, h) if w * h <= GRAY_PROBE_PIXELS else (min(w, side), min(h, side))
    d = slide.level_downsamples[level]
    try:
        view = slide.read_region(round((w - cw) / 2 * d), round((h - ch) / 2 * d), cw, ch, level)
    except Exception:  # noqa: BLE001 - damaged data: the tile reads name it (io/checked_read.py)
        return
    gray = bool((view[..., 0] == view[..., 1]).all() and (view[..., 1] == view[..., 2]).all())
    if gray and int(view.max()) - int(view.min()) > 16:  # a constant view is blank, not grayscale (no tissue)
        raise InputError(
            f"{slide.path.name} is a grayscale image; muse-fast needs colour (RGB) H&E images: export the slide in RGB"
        )


__all__ = ["READERS", "SlideReader", "open_slide"]
