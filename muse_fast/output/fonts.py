"""The font of the text drawn into PNGs (overlay legend, density map labels): Pillow's own, which has only ASCII
letters, unless a text needs more (a class named "Épithélium" or "Entzündung"); then the first of
:data:`SYSTEM_FONTS` found on the machine (DejaVu Sans on most Linux systems), so no letter is drawn as a box."""

from __future__ import annotations

import functools
from collections.abc import Iterable

from PIL import ImageFont

SYSTEM_FONTS = (
    "DejaVuSans.ttf",  # Linux (fonts-dejavu-core)
    "NotoSans-Regular.ttf",
    "LiberationSans-Regular.ttf",
    "Arial Unicode.ttf",  # macOS
    "Arial.ttf",
    "arial.ttf",  # Windows
)
DEFAULT_PX = 11  # Pillow's bitmap font's height, for texts drawn without a size


def text_font(size: int | None, texts: Iterable[str]) -> ImageFont.ImageFont | ImageFont.FreeTypeFont | None:
    """The font for ``texts`` at ``size`` px; ``size`` None and ASCII texts: None (Pillow's bitmap default)."""
    if all(str(t).isascii() for t in texts):
        return _pillow_font(size) if size is not None else None
    return _system_font(size or DEFAULT_PX) or (_pillow_font(size) if size is not None else None)


@functools.lru_cache(maxsize=8)
def _system_font(size: int) -> ImageFont.FreeTypeFont | None:
    for name in SYSTEM_FONTS:  # Pillow looks in the system's font folders for a bare file name
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return None


def _pillow_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: a scalable font
    except TypeError:
        return ImageFont.load_default()
