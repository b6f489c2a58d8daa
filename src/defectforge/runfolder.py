"""One run-folder helper for every resumable job.

(Grows below; the first piece is the safe state loader.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from defectforge.errors import InputError


def load_state(path: str | Path, what: str = "checkpoint") -> Any:
    """Read a torch-saved state (checkpoint, model file) **without running code**.

    ``torch.load(weights_only=True)`` only rebuilds tensors and plain data (numbers,
    strings, lists, dicts); a file that holds any other Python object (a pickle that
    would import or call something) is refused with an :class:`InputError` naming the
    file, and nothing in it is executed. Truncated or corrupt files are refused the same way.
    """
    import pickle

    import torch

    p = Path(path)
    if not p.is_file():
        raise InputError(p, f"{what} file not found")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        import re

        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        detail = f" (it names {found.group(1)})" if found else ""
        raise InputError(p, f"refused to load this {what}: it holds Python objects other than tensors and plain "
                            f"data, which could run code{detail}") from None
    except Exception as exc:
        raise InputError(p, f"not a readable {what} file (truncated or corrupt?): {exc.__class__.__name__}") from None
