"""Interrupts that Python lost, raised again at the run's next step.

A KeyboardInterrupt that lands in a garbage-collection callback (a weakref's, a ``__del__``) is printed as
"Exception ignored" and dropped, and the run would go on to the end and exit 0. The command line's SIGINT and SIGTERM
handlers :func:`note` each one before raising it and :func:`clear` it once it arrives; every step of a slide run
(:func:`~muse_fast.runtime.seams.seam`) calls :func:`raise_if_lost`, so a lost one stops the run at its next step,
as it would have stopped where it landed.
"""

from __future__ import annotations

_noted: list[type[KeyboardInterrupt]] = []  # raised by a handler, not yet seen to arrive


def note(kind: type[KeyboardInterrupt]) -> None:
    """A signal handler is about to raise ``kind``."""
    _noted[:] = [kind]


def clear() -> None:
    """The interrupt arrived where it is handled (the command line's ``except KeyboardInterrupt``)."""
    _noted.clear()


def lost() -> type[KeyboardInterrupt] | None:
    """The kind of the interrupt raised but never arrived, or None."""
    return _noted[0] if _noted else None


def raise_if_lost() -> None:
    """Raise again the interrupt that was raised and lost (see the module doc)."""
    kind = lost()
    if kind is not None:
        clear()
        raise kind()
