"""Text that came from outside (file names, class names) made safe for where it goes.

On a terminal or in a log, control characters are shown escaped (``\\x1b`` for ESC), so a slide or class name cannot
move the cursor, clear the screen, retitle the window or hide text behind a bidirectional override. In a CSV cell, a
name that a spreadsheet would run as a formula gets a leading single quote (OWASP, "CSV Injection"). GeoJSON, Parquet
and AnnData files keep the exact names: their readers do not evaluate them.
"""

from __future__ import annotations

import logging
import unicodedata

# Bidirectional embeddings, overrides and isolates: format characters that reorder what a terminal shows
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # OWASP: cells starting with these are evaluated by spreadsheets


def _escaped(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with control characters (C0, DEL, C1), lone surrogates and bidirectional controls escaped."""
    if text.isprintable():
        return text
    return "".join(
        _escaped(c) if unicodedata.category(c) in ("Cc", "Cs") or c in BIDI_CONTROLS else c for c in str(text)
    )


def csv_cell(text: str) -> str:
    """A text cell for a CSV file: a leading ``'`` when it starts with ``= + - @``, a tab or a carriage return."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


class PrintableFormatter(logging.Formatter):
    """A log formatter whose messages show control characters escaped (see :func:`printable`)."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        return printable(super().formatMessage(record))
