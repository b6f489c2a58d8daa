"""Which images a detector was fitted on, so that ``detect eval`` never scores them unawares.

A memory-bank detector scores the images of its own bank at (nearly) zero distance: evaluated
on them it reports an image AUROC near 1.0 that says nothing about new parts. ``fit`` records a
key per image file it used (normal images, the validation images carved from them, real
defect images): ``fit_info_["fitted_images"]``, the first 16 hex digits of the SHA-1 of the
file's resolved path. :func:`fitted_overlap` counts the evaluated images among them.
Model files from before that record name their real defect sets ``real:<data>`` only
(the train split of ``<data>``), which :func:`fitted_overlap` uses when nothing else is there.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterable

#: the ``fit_info_`` key holding the keys of the fitted image files
FITTED_KEY = "fitted_images"


def image_key(path: str | Path) -> str:
    """The key of one image file: its resolved path, hashed (no path is stored in the model)."""
    return hashlib.sha1(str(Path(path).resolve()).encode("utf-8", "surrogatepass")).hexdigest()[:16]


def image_keys(items: Iterable[Any]) -> list[str]:
    """Sorted unique keys of the items that are files (``Sample`` s with a ``path``); arrays have none."""
    keys = set()
    for it in items:
        p = getattr(it, "path", None)
        if p is not None:
            keys.add(image_key(p))
    return sorted(keys)


def fitted_overlap(fit_info: dict[str, Any], samples: list[Any], data: str | Path | None = None,
                   split: str | None = None) -> tuple[int, Any] | None:
    """``(how many, first)`` of ``samples`` the model was fitted on, ``(0, None)`` when none,
    or ``None`` when the model file does not say what it was fitted on.

    Without a record of image keys (older model files), a real defect set ``real:<data>`` in
    ``fit_info["defect_sets"]`` means the train split of ``<data>`` was fitted on."""
    keys = fit_info.get(FITTED_KEY)
    if isinstance(keys, list):
        known = set(keys)
        hit = [s for s in samples if getattr(s, "path", None) is not None and image_key(s.path) in known]
        return len(hit), (hit[0] if hit else None)
    sets = [st.get("name", "") for st in fit_info.get("defect_sets") or [] if isinstance(st, dict)]
    real = [n[len("real:"):] for n in sets if isinstance(n, str) and n.startswith("real:")]
    if data is not None and split == "train" and any(_same_path(r, data) for r in real):
        return len(samples), (samples[0] if samples else None)
    return None


def _same_path(a: str | Path, b: str | Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, RuntimeError, ValueError):
        return False
