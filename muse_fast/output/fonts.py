"""The font of the text drawn into PNGs (overlay legend, density map labels): Pillow's own, which has only ASCII
letters, unless a text needs more (a class named "Épithélium", "Entzündung" or "腫瘍"); then the first of
:data:`SYSTEM_FONTS` found on the machine that has all its letters (DejaVu Sans on most Linux systems for Latin
letters; a CJK font for Chinese and Japanese names, where one is installed), so that no letter the machine can draw
is drawn as a box."""

from __future__ import annotations

import functools
from collections.abc import Iterable

from PIL import Image, ImageDraw, ImageFont

SYSTEM_FONTS = (
    "DejaVuSans.ttf",  # Linux (fonts-dejavu-core): Latin, Greek, Cyrillic
    "NotoSans-Regular.ttf",
    "LiberationSans-Regular.ttf",
    "NotoSansCJK-Regular.ttc",  # Linux (fonts-noto-cjk): Chinese, Japanese, Korean
    "wqy-zenhei.ttc",
    "Arial Unicode.ttf",  # macOS
    "Arial.ttf",
    "arial.ttf",  # Windows
    "msyh.ttc",
)
DEFAULT_PX = 11  # Pillow's bitmap font's height, for texts drawn without a size


def text_font(size: int | None, texts: Iterable[str]) -> ImageFont.ImageFont | ImageFont.FreeTypeFont | None:
    """The font for ``texts`` at ``size`` px; ``size`` None and ASCII texts: None (Pillow's bitmap default). Beyond
    ASCII: the first system font that has every letter of ``texts``, else the one that has most."""
    letters = sorted({c for t in texts for c in str(t) if not c.isascii() and c.isprintable()})
    if not letters:
        return _pillow_font(size) if size is not None else None
    fonts = [f for f in (_system_font(name, size or DEFAULT_PX) for name in SYSTEM_FONTS) if f is not None]
    best = max(fonts, key=lambda f: sum(_has(f, c) for c in letters), default=None)  # the first of equals
    return best or (_pillow_font(size) if size is not None else None)


@functools.lru_cache(maxsize=64)
def _system_font(name: str, size: int) -> ImageFont.FreeTypeFont | None:
    try:  # Pillow looks in the system's font folders for a bare file name
        return ImageFont.truetype(name, size)
    except OSError:
        return None


def _has(font: ImageFont.FreeTypeFont, letter: str) -> bool:
    """Whether ``font`` draws ``letter`` as itself, not as its box for a missing glyph (a private-use character's)."""
    return _drawn(font, letter) != _drawn(font, "\ue000")


@functools.lru_cache(maxsize=4096)
def _drawn(font: ImageFont.FreeTypeFont, letter: str) -> bytes:
    im = Image.new("L", (2 * font.size, 2 * font.size), 0)
    ImageDraw.Draw(im).text((0, 0), letter, font=font, fill=255)
    return im.tobytes()


def _pillow_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: a scalable font
    except TypeError:
        return ImageFont.load_default()
