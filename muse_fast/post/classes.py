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


def class_colours(names, given: dict | None = None) -> list[tuple[int, int, int]]:
    """One display colour per class of ``names``, no two alike. A colour of the user's (``given`` for the name, as
    QuPath exported it, or recorded in a :class:`ClassName`) goes to the first class that has it; then each other
    class takes :func:`class_colour`'s default if no class has it yet, else the first free colour of
    :func:`palette`."""
    given = given or {}
    own = [tuple(given[n]) if n in given else getattr(n, "colour", None) for n in names]
    out: list = [None] * len(names)
    for i, colour in enumerate(own):
        if colour is not None and tuple(colour) not in out:
            out[i] = tuple(colour)
    for i, name in enumerate(names):
        if out[i] is None:
            colour = class_colour(str(name), i)
            out[i] = colour if colour not in out else next(c for c in palette() if c not in out)
    return out


def palette() -> Iterator[tuple[int, int, int]]:
    """Colours for classes without one of their own: the Okabe-Ito colours (fallbacks first), then hues around the
    colour wheel at the golden angle (saturated, mid-bright), without end."""
    yield from _FALLBACK
    yield from (OKABE_ITO["yellow"], OKABE_ITO["vermillion"], OKABE_ITO["bluish green"], (204, 121, 167))
    for k in itertools.count():
        r, g, b = colorsys.hsv_to_rgb((k * 0.381966) % 1.0, 0.85, 0.9)
        yield round(r * 255), round(g * 255), round(b * 255)
