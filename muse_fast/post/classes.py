"""Nucleus classes: names and display colours (RGB, used by the overlay PNG and the GeoJSON for QuPath)."""

from __future__ import annotations

import colorsys
import itertools
from collections.abc import Iterator

BRCA_M2C_CLASSES = ("lymphocyte", "tumor", "stromal")

# Okabe-Ito colours (distinguishable with the common colour-vision deficiencies), chosen to stand out on H&E: none is
# purple like haematoxylin or pink like eosin. Known class names get a fixed colour; any other name one from the cycle.
OKABE_ITO = {
    "yellow": (240, 228, 66),
    "sky blue": (86, 180, 233),
    "bluish green": (0, 158, 115),
    "orange": (230, 159, 0),
    "blue": (0, 114, 178),
    "vermillion": (213, 94, 0),
}
_KNOWN_COLOURS = {
    "lymphocyte": OKABE_ITO["yellow"],
    "tumor": OKABE_ITO["vermillion"],
    "stromal": OKABE_ITO["bluish green"],
}
_FALLBACK = (OKABE_ITO["orange"], OKABE_ITO["sky blue"], OKABE_ITO["blue"])


class ClassName(str):
    """A class name that carries the display colour its weights file records (``muse-fast adapt`` keeps QuPath's)."""

    colour: tuple[int, int, int]

    def __new__(cls, name: str, colour) -> ClassName:
        obj = super().__new__(cls, name)
        obj.colour = tuple(int(c) for c in colour)
        return obj

    def __reduce__(self):
        return ClassName, (str(self), self.colour)


def class_colour(name: str, index: int) -> tuple[int, int, int]:
    """The display colour of class ``name`` alone (``index``: its position, which picks a colour for unknown names);
    a :class:`ClassName` keeps its recorded colour. A list of classes takes :func:`class_colours`."""
    recorded = getattr(name, "colour", None)
    if recorded is not None:
        return tuple(recorded)
    return _KNOWN_COLOURS.get(name, _FALLBACK[index % len(_FALLBACK)])


MIN_DELTA_E = 25.0  # CIE76 distance in Lab below which two class colours are taken for one (where the palette allows)


def class_colours(names, given: dict | None = None) -> list[tuple[int, int, int]]:
    """One display colour per class of ``names``, no two alike. A colour of the user's (``given`` for the name, as
    QuPath exported it, or recorded in a :class:`ClassName`) goes to the first class that has it; then known class
    names take their fixed colours where free; then each other class takes :func:`class_colour`'s default if free and
    not close to one taken, else the first colour of :func:`palette` that is neither."""
    given = given or {}
    own = [tuple(given[n]) if n in given else getattr(n, "colour", None) for n in names]
    out: list = [None] * len(names)
    for i, colour in enumerate(own):
        if colour is not None and tuple(colour) not in out:
            out[i] = tuple(colour)
    for i, name in enumerate(names):
        known = _KNOWN_COLOURS.get(str(name))
        if out[i] is None and known is not None and known not in out:
            out[i] = known
    for i, name in enumerate(names):
        if out[i] is None:
            taken = [c for c in out if c is not None]
            out[i] = _free(taken, class_colour(str(name), i))
    return out


def _free(taken: list, first: tuple[int, int, int]) -> tuple[int, int, int]:
    """``first``, else the first of :func:`palette`'s colours, that is apart from every ``taken`` one
    (:data:`MIN_DELTA_E`); where a long palette runs short of those, the first not taken."""
    taken_lab = [_lab(c) for c in taken]
    candidates = list(itertools.islice(itertools.chain([first], palette()), 400))
    for c in candidates:
        lab = _lab(c)
        if c not in taken and all(_delta_e(lab, t) >= MIN_DELTA_E for t in taken_lab):
            return c
    return next(c for c in itertools.chain(candidates, palette()) if c not in taken)


def _lab(rgb: tuple[int, int, int]) -> tuple[float, float, float]:
    """CIE L*a*b* (D65) of an sRGB colour."""
    lin = [((v / 255 + 0.055) / 1.055) ** 2.4 if v / 255 > 0.04045 else v / 255 / 12.92 for v in rgb]
    x = (0.4124 * lin[0] + 0.3576 * lin[1] + 0.1805 * lin[2]) / 0.95047
    y = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    z = (0.0193 * lin[0] + 0.1192 * lin[1] + 0.9505 * lin[2]) / 1.08883
    f = [t ** (1 / 3) if t > 216 / 24389 else (24389 / 27 * t + 16) / 116 for t in (x, y, z)]
    return 116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])


def _delta_e(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
    return sum((p - q) ** 2 for p, q in zip(a, b)) ** 0.5


def palette() -> Iterator[tuple[int, int, int]]:
    """Colours for classes without one of their own: the Okabe-Ito colours (fallbacks first), then hues around the
    colour wheel at the golden angle, at three brightnesses in turn, without end."""
    yield from _FALLBACK
    yield from (OKABE_ITO["yellow"], OKABE_ITO["vermillion"], OKABE_ITO["bluish green"], (204, 121, 167))
    for k in itertools.count():
        r, g, b = colorsys.hsv_to_rgb((k * 0.381966) % 1.0, (0.85, 0.6, 0.9)[k % 3], (0.9, 0.6, 0.75)[k % 3])
        yield round(r * 255), round(g * 255), round(b * 255)
