"""Error types. Every user-facing failure is one of these, so the CLI can print a
single clear line (``error: <path>: <problem>``) instead of a traceback."""

from __future__ import annotations

import errno
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


#: OS errors that are about the user's files or disk (not a bug): shown as one line
_USER_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR, errno.EISDIR,
                errno.EEXIST, errno.ENOENT, errno.ENAMETOOLONG, errno.ELOOP, errno.EMFILE, errno.EFBIG}

_HINTS = {errno.EACCES: "no permission to write here; choose another output folder",
          errno.EPERM: "not permitted; choose another output folder",
          errno.EROFS: "read-only file system; choose another output folder",
          errno.ENOSPC: "disk full; free space or choose another output folder",
          errno.EDQUOT: "disk quota exceeded"}


def user_error_message(exc: BaseException) -> str | None:
    """The one-line ``<file>: <problem>`` for an error that is the user's input or
    environment, or ``None`` for a bug (which should keep its traceback).

    :class:`DefectforgeError` gives its message; an :class:`OSError` about a file
    (permission denied, read-only or full disk, not a folder, ...) gives the file and the
    reason with a hint. The CLI boundary calls this for every command."""
    if isinstance(exc, DefectforgeError):
        return str(exc)
    if isinstance(exc, UnicodeDecodeError):  # a text input that is not UTF-8 (readers name the file when they can)
        return f"an input text file is not UTF-8 ({exc.reason} at byte {exc.start})"
    if isinstance(exc, OSError) and exc.errno in _USER_ERRNOS:
        where = exc.filename if exc.filename is not None else None
        reason = exc.strerror or exc.__class__.__name__
        hint = _HINTS.get(exc.errno)
        text = f"{reason} ({hint})" if hint else reason
        if exc.filename2 is not None:
            text += f" (while moving to {exc.filename2})"
        return f"{where}: {text}" if where is not None else text
    return None
