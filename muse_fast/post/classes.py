"""Nucleus classes: names and display colours (RGB, used by the overlay PNG and the GeoJSON for QuPath)."""

from __future__ import annotations

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
    """The display colour of class ``name`` (``index``: its position, which picks a colour for unknown names); a
    :class:`ClassName` keeps its recorded colour."""
    recorded = getattr(name, "colour", None)
    if recorded is not None:
        return recorded
    return _KNOWN_COLOURS.get(name, _FALLBACK[index % len(_FALLBACK)])
