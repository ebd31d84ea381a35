"""Slide resolution (microns per pixel) from the places scanners actually record it.

Sources, in order: Aperio ``MPP = x`` in the ImageDescription; OME-XML ``PhysicalSizeX/Y`` (with units); TIFF
``XResolution/YResolution`` with ``ResolutionUnit`` (inch or centimetre); for plain images the PNG/JPEG dpi. Each
reader reports what its library finds; :func:`file_resolution` is the fallback that reads the file's tags directly,
so a reader whose library misses a field (OpenSlide on OME-TIFF, cuCIM on generic TIFF) still gets an mpp.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

UM_PER = {
    "inch": 25400.0,
    "centimeter": 1e4,
    "cm": 1e4,
    "mm": 1e3,
    "millimeter": 1e3,
    "µm": 1.0,
    "um": 1.0,
    "micrometer": 1.0,
    "nm": 1e-3,
    "nanometer": 1e-3,
    "m": 1e6,
    "meter": 1e6,
}
SQUARE_TOLERANCE = 0.01  # pixels whose x and y sizes differ by more than 1% are refused


@dataclass(frozen=True)
class Resolution:
    mpp_x: float
    mpp_y: float
    source: str

    def square_mpp(self, name: str) -> float:
        """The single mpp of square pixels; non-square pixels are refused with the fix."""
        if abs(self.mpp_x - self.mpp_y) > SQUARE_TOLERANCE * max(self.mpp_x, self.mpp_y):
            raise InputError(
                f"{name} has non-square pixels ({self.mpp_x:.4f} x {self.mpp_y:.4f} um, {self.source}); "
                "resample it to square pixels first (e.g. vips resize) or pass --mpp to override"
            )
        return (self.mpp_x + self.mpp_y) / 2


def aperio_mpp(description: str) -> Resolution | None:
    match = re.search(r"\|\s*MPP\s*=\s*([0-9.eE+-]+)", description or "")
    if match and float(match.group(1)) > 0:
        value = float(match.group(1))
        return Resolution(value, value, "Aperio MPP")
    return None


def ome_mpp(ome_xml: str) -> Resolution | None:
    try:
        root = ET.fromstring(ome_xml)
    except ET.ParseError:
        return None
    for el in root.iter():
        if el.tag.endswith("Pixels") and "PhysicalSizeX" in el.attrib:
            x = float(el.attrib["PhysicalSizeX"]) * UM_PER.get(el.attrib.get("PhysicalSizeXUnit", "µm"), 1.0)
            y = float(el.attrib.get("PhysicalSizeY", el.attrib["PhysicalSizeX"]))
            y *= UM_PER.get(el.attrib.get("PhysicalSizeYUnit", el.attrib.get("PhysicalSizeXUnit", "µm")), 1.0)
            if x > 0 and y > 0:
                return Resolution(x, y, "OME PhysicalSize")
    return None


def tiff_tag_mpp(page) -> Resolution | None:
    """From XResolution/YResolution (pixels per unit) and ResolutionUnit (2 = inch, 3 = centimetre)."""
    tags = page.tags
    if "XResolution" not in tags or "ResolutionUnit" not in tags:
        return None
    unit = {2: "inch", 3: "centimeter"}.get(int(tags["ResolutionUnit"].value))
    if unit is None:
        return None

    def per_pixel(tag: str) -> float | None:
        num, den = tags[tag].value if tag in tags else tags["XResolution"].value
        return UM_PER[unit] * den / num if num > 0 and den > 0 else None

    x, y = per_pixel("XResolution"), per_pixel("YResolution")
    if x is None or y is None or x > 100 or (unit == "inch" and _placeholder_dpi(page)):
        return None
    return Resolution(x, y, f"TIFF resolution tags ({unit})")


def _placeholder_dpi(page) -> bool:
    """72 or 96 dpi (and 1 pixel per inch) are software defaults, not a scanner's measurement."""
    num, den = page.tags["XResolution"].value
    return den > 0 and round(num / den) in PLACEHOLDER_DPI


PLACEHOLDER_DPI = (1, 72, 96, 300)


def placeholder_mpp(mpp: float) -> bool:
    """An um/px that only a software default gives (:data:`PLACEHOLDER_DPI` as resolution tags), or beyond 100."""
    return mpp > 100 or any(abs(mpp * dpi / 25400 - 1) < 1e-3 for dpi in PLACEHOLDER_DPI)


def from_properties(props, prefix: str, source: str) -> Resolution | None:
    """``<prefix>.mpp-x`` / ``<prefix>.mpp-y`` as OpenSlide and tiffslide report them; none where they come from a
    TIFF's placeholder resolution tags (72 dpi is 352.8 um/px), which :func:`tiff_tag_mpp` ignores too."""
    x, y = props.get(f"{prefix}.mpp-x"), props.get(f"{prefix}.mpp-y")
    if not x or float(x) <= 0 or placeholder_mpp(float(x)):
        return None
    return Resolution(float(x), float(y) if y and float(y) > 0 else float(x), source)


def file_resolution(path: str | Path) -> Resolution | None:
    """Read the resolution directly from a TIFF-family file's tags, or None if it does not record one."""
    try:
        import tifffile

        with tifffile.TiffFile(str(path)) as tif:
            page = tif.pages[0]
            if found := aperio_mpp(page.description or ""):
                return found
            if tif.is_ome and (found := ome_mpp(tif.ome_metadata or "")):
                return found
            return tiff_tag_mpp(page)
    except Exception:  # noqa: BLE001 - not a TIFF, or unreadable: no resolution from tags
        return None


TIFF_FAMILY = (".svs", ".tif", ".tiff", ".ndpi", ".scn", ".bif")


def truncation_problem(path: str | Path) -> str | None:
    """For TIFF-family files: a description of tile or strip data that lies past the end of the file, else None.

    Some backends decode missing tiles as black or grey without any error, so a cut-off copy would silently give
    wrong nuclei; comparing the recorded data offsets with the file size catches it before any pixel is read.
    """
    path = Path(path)
    if path.suffix.lower() not in TIFF_FAMILY:
        return None
    size = path.stat().st_size
    try:
        import tifffile

        with tifffile.TiffFile(str(path)) as tif:
            for index, page in enumerate(tif.pages):
                ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts) if n]
                if ends and max(ends) > size:
                    return f"page {index} needs {max(ends)} bytes but the file has {size}"
                chunks = math.prod(page.chunked)  # tiles or strips its width and height need
                if len(page.dataoffsets) < chunks:  # a damaged header: reading it would decode nothing for hours
                    return (
                        f"page {index} claims {page.imagewidth} x {page.imagelength} px in {chunks:,} tiles or strips "
                        f"but records {len(page.dataoffsets):,}"
                    )
    except Exception as exc:  # noqa: BLE001 - an unreadable directory chain is truncation too, if the backends agree
        text = str(exc).lower()
        if "offset" in text or "truncat" in text or "eof" in text:
            return f"its TIFF directory is cut off ({type(exc).__name__})"
    return None
