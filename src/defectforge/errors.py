"""Error types. Every user-facing failure is one of these, so the CLI can print a
single clear line (``error: <path>: <problem>``) instead of a traceback."""

from __future__ import annotations

from pathlib import Path


class DefectforgeError(Exception):
    """Base class for errors that are the user's input or configuration, not a bug."""


class InputError(DefectforgeError, ValueError):
    """A file or value given by the user is missing, unreadable or malformed.

    ``InputError(path, problem)`` formats as ``"<path>: <problem>"`` so the message
    always names the file.
    """

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{path}: {problem}")

    def __reduce__(self):  # picklable, so it crosses process / Ray worker boundaries intact
        return (type(self), (self.path, self.problem))


class ConfigError(DefectforgeError, ValueError):
    """A configuration, instruction or parameter is invalid."""
