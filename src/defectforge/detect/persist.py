"""One-file model persistence shared by detectors: a torch-saved dict that loads with
``weights_only=True`` (tensors, numbers, strings, lists, dicts only), written atomically,
with a ``kind`` tag and a ``format_version`` checked on load.

Detectors elsewhere (3D, supervised) can use the same two functions.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from defectforge.errors import InputError


def write_model_file(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (with its ``kind`` and ``format_version``) atomically to ``path``;
    ``defectforge_version`` is added."""
    import torch

    from defectforge import __version__
    from defectforge._atomic import atomic_write_bytes

    obj = {"defectforge_version": __version__, **payload}
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def read_model_file(path: str | Path, kind: str, max_version: int, what: str = "model") -> dict[str, Any]:
    """The payload in ``path``, checked: readable (not truncated), of this ``kind``, and
    with a ``format_version`` this code can read. Every problem is an :class:`InputError`
    naming the file."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"{what} file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(path, f"not a readable defectforge {what} file (truncated or corrupt?): "
                               f"{exc.__class__.__name__}") from None
    if not isinstance(obj, dict) or obj.get("kind") != kind:
        raise InputError(path, f"not a defectforge {what} file (expected kind {kind!r})")
    ver = obj.get("format_version")
    if not isinstance(ver, int) or ver > max_version:
        raise InputError(path, f"{what} format version {ver} was written by defectforge "
                               f"{obj.get('defectforge_version')}; this version reads up to {max_version}: "
                               "upgrade defectforge")
    return obj
