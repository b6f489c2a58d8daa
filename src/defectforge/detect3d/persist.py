"""One-file persistence of fitted 3D detectors (torch format, loaded with ``weights_only=True``).

A file holds ``{"kind", "format_version", "defectforge_version", "models": {name: payload}}``
where each payload is a dict of plain values and tensors with a ``"class"`` entry; one
file can hold one detector per category (the CLI fits one per class). Reading and writing
go through :mod:`defectforge.detect.persist` (atomic write; truncated, foreign or newer
files raise :class:`~defectforge.errors.InputError`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from defectforge.errors import InputError

MODEL_KIND = "defectforge.detect3d"
FORMAT_VERSION = 1


def save_models(path: str | Path, models: dict[str, Any]) -> Path:
    """Write ``{name: detector}`` (each with ``to_payload()``) atomically to ``path``."""
    from defectforge.detect.persist import write_model_file

    return write_model_file(path, {
        "kind": MODEL_KIND, "format_version": FORMAT_VERSION,
        "models": {str(k): {"class": type(m).__name__, **m.to_payload()} for k, m in models.items()}})


def load_models(path: str | Path, progress: bool = False) -> dict[str, Any]:
    """``{name: detector}`` from :func:`save_models`."""
    from defectforge.detect.persist import read_model_file
    from defectforge.detect3d import detector_classes

    obj = read_model_file(path, MODEL_KIND, FORMAT_VERSION, what="3D detector")
    out = {}
    try:
        for name, payload in obj["models"].items():
            klass = detector_classes()[payload["class"]]
            out[name] = klass.from_payload(payload, progress=progress)
    except (KeyError, TypeError, AttributeError, ValueError, RuntimeError) as exc:
        raise InputError(path, f"model file is incomplete ({exc.__class__.__name__}: {exc})") from None
    if not out:
        raise InputError(path, "model file holds no detector")
    return out


def load_single(path: str | Path, progress: bool = False) -> Any:
    models = load_models(path, progress=progress)
    if len(models) != 1:
        raise InputError(path, f"file holds {len(models)} detectors ({', '.join(models)}); use load_models")
    return next(iter(models.values()))


class PersistentDetector:
    """``save(path)`` / ``load(path)`` for a 3D detector with ``to_payload``/``from_payload``."""

    def save(self, path: str | Path) -> Path:
        """One model file (see the module docstring) holding this detector."""
        return save_models(path, {"default": self})

    @classmethod
    def load(cls, path: str | Path):
        """The detector saved in ``path``; InputError when it holds another kind."""
        m = load_single(path)
        if not isinstance(m, cls):
            raise InputError(path, f"file holds a {type(m).__name__}, not a {cls.__name__}")
        return m
