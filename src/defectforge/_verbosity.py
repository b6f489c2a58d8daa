"""``defectforge -q`` / ``-v``: one process-wide verbosity for command output.

- quiet (``-q``): consoles from :func:`defectforge._cliutil.console` print nothing and progress
  bars are off; errors (``error: ...``) and ``--json -`` output still appear, exit codes are
  unchanged;
- normal: the default;
- verbose (``-v``): Python ``logging`` at INFO on stderr and every warning shown (not only the
  first of each kind).
"""

from __future__ import annotations

QUIET, NORMAL, VERBOSE = 0, 1, 2
_level = NORMAL


def set_level(level: int) -> None:
    global _level
    _level = level
    if level >= VERBOSE:
        import logging
        import warnings

        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        warnings.simplefilter("always")


def level() -> int:
    return _level


def is_quiet() -> bool:
    return _level <= QUIET
