"""The base class of dataforge's user-facing errors."""

from __future__ import annotations


class DataforgeError(Exception):
    """A problem a user can fix (a missing file, a bad field, an unknown name), printed as one
    line by the CLI, without a traceback.

    Subclasses keep their older base classes too (``class InputError(DataforgeError,
    ValueError)``), so code catching ``ValueError`` or ``RuntimeError`` still catches them.
    """
