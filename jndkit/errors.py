"""Typed errors. Every user-facing failure is a subclass of :class:`JndkitError`.

Errors subclass :class:`ValueError` (or :class:`OSError` for I/O) so callers that
catch the builtin types keep working, and their message is one line that names
the offending file or value and the reason.
"""

from __future__ import annotations


class JndkitError(Exception):
    """Base class of all jndkit errors."""


class InputError(JndkitError, ValueError):
    """A value given by the user is invalid (shape, range, option)."""


class ImageError(JndkitError, ValueError):
    """A file could not be read as an image, or is unusable (too small, truncated)."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class OutputError(JndkitError, OSError):
    """An output could not be written (exists already, folder not writable)."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class WeightsNotFoundError(JndkitError, FileNotFoundError):
    """Model weights are not on disk. jndkit never downloads; the message says how to provide them."""
