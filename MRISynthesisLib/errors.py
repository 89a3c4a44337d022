"""Exceptions that mean "the user gave us something we cannot use".

The CLI turns :class:`InputError` into one ``error: …`` line and exit code 2; anything else that escapes
is a bug (exit 1). Messages name the file or argument and what is wrong with it, so a batch user can fix
the input without reading a traceback.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input or bad usage: a missing or unreadable file, a wrong shape, NaN voxels, an unknown name."""

