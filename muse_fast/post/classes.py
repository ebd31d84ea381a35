"""Nucleus classes: names and display colours (QuPath-style RGB)."""

from __future__ import annotations

BRCA_M2C_CLASSES = ("lymphocyte", "tumor", "stromal")

# QuPath-like colours for well-known class names; anything else gets a colour from the fallback cycle.
_KNOWN_COLOURS = {
    "lymphocyte": (160, 90, 160),
    "tumor": (200, 0, 0),
    "stromal": (150, 200, 150),
}
_FALLBACK = ((0, 114, 178), (230, 159, 0), (0, 158, 115), (204, 121, 167), (86, 180, 233), (213, 94, 0))


def class_colour(name: str, index: int) -> tuple[int, int, int]:
    return _KNOWN_COLOURS.get(name, _FALLBACK[index % len(_FALLBACK)])
