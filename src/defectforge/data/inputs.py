"""What a ``predict`` call accepts, as one list of items the detectors understand.

``as_items(x)`` takes a single input or an iterable of them:

- ``str`` / ``Path``: an image file, a folder (its images, sorted), or a glob pattern
  (``"parts/*.jpg"``, ``"**"`` allowed); each image becomes a :class:`Sample` with that path;
- a :class:`Sample`, an ``H x W [x C]`` numpy array, or a PIL image (converted to an array);
- a :class:`Dataset` (its samples).

Anything else, a missing path or a pattern / folder without images raises
:class:`~defectforge.errors.InputError` naming it.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

import numpy as np

from defectforge.errors import InputError


def _is_single(x: Any) -> bool:
    from defectforge.data.sample import Sample

    if isinstance(x, (str, Path, Sample)):
        return True
    if isinstance(x, np.ndarray):
        # H x W or H x W x C is one image; N x H x W x C (or N x H x W) a batch
        return x.ndim == 2 or (x.ndim == 3 and x.shape[2] in (1, 3, 4))
    return _is_pil(x)


def _is_pil(x: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        return False
    return isinstance(x, Image.Image)


def _expand_path(p: str | Path) -> list[Any]:
    from defectforge.data._files import list_images
    from defectforge.data.image_io import is_image_file
    from defectforge.data.sample import Sample

    s = str(p)
    path = Path(p)
    if path.is_dir():
        found = list_images(path)
        if not found:
            raise InputError(path, "folder holds no images")
        return [Sample(path=f) for f in found]
    if path.is_file():
        if not is_image_file(path):
            raise InputError(path, "not an image file (by its suffix)")
        return [Sample(path=path)]
    if glob.has_magic(s):
        found = sorted(Path(f) for f in glob.glob(s, recursive=True) if is_image_file(f) and Path(f).is_file())
        if not found:
            raise InputError(path, "the pattern matches no image files")
        return [Sample(path=f) for f in found]
    raise InputError(path, "file not found")


def _one(x: Any) -> list[Any]:
    from defectforge.data.sample import Sample

    if isinstance(x, (str, Path)):
        return _expand_path(x)
    if isinstance(x, Sample):
        return [x]
    if _is_pil(x):
        return [np.asarray(x.convert("RGB") if x.mode not in ("L", "RGB", "I;16") else x)]
    if isinstance(x, np.ndarray):
        return [x]
    raise InputError(None, f"cannot predict on a {type(x).__name__}: pass image paths, folders, glob patterns, "
                           "numpy arrays, PIL images or Samples")


def as_items(images: Any) -> list[Any]:
    """``images`` (one input or an iterable of inputs) as a flat list of Samples / arrays."""
    from defectforge.data.sample import Dataset

    if isinstance(images, Dataset):
        return list(images)
    if _is_single(images):
        return _one(images)
    try:
        seq = list(images)
    except TypeError:
        raise InputError(None, f"cannot predict on a {type(images).__name__}: pass image paths, folders, glob "
                               "patterns, numpy arrays, PIL images or Samples") from None
    out: list[Any] = []
    for x in seq:
        out.extend(_one(x))
    return out
