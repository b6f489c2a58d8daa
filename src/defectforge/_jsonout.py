"""``--json PATH`` on every command: a file, or ``-`` for standard output.

With ``--json -`` the JSON is the only thing on stdout (one document, so it pipes into
``jq``); the command's human-readable lines go to stderr (:func:`console_for`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

STDOUT = "-"


def is_stdout(path: str | Path | None) -> bool:
    return path is not None and str(path) == STDOUT


def console_for(json_out: str | Path | None):
    """The console for a command's human output: stderr when the JSON goes to stdout."""
    from rich.console import Console

    from defectforge._verbosity import is_quiet

    return Console(highlight=False, soft_wrap=True, stderr=is_stdout(json_out), quiet=is_quiet())


def write_json_out(path: str | Path, obj: Any) -> str:
    """Write ``obj`` to ``path`` (atomically) or to stdout for ``-``; returns where it went."""
    from defectforge._atomic import _json_default, atomic_write_json

    if is_stdout(path):
        sys.stdout.write(json.dumps(obj, indent=2, default=_json_default) + "\n")
        sys.stdout.flush()
        return "stdout"
    atomic_write_json(path, obj)
    return str(path)
