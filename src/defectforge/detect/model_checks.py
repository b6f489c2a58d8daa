"""Sanity checks on a detector's learned state, at load time (a model file handed over by
someone else) and at the end of fitting.

A memory bank holding NaN/inf scores every image as ``1.8e19`` or ``nan`` and flags it; an
input size of 100000 x 100000 in a model file makes the first prediction try to allocate
over 100 GB. Both are refused with :class:`~defectforge.errors.InputError` naming the file.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from defectforge.errors import InputError


def check_input_size(path: str | Path | None, input_size: Any) -> tuple[int, int]:
    """``(h, w)`` of two positive ints whose product is within the image pixel limit
    (:func:`defectforge.data.image_io.max_pixels`, ``DEFECTFORGE_MAX_PIXELS``)."""
    from defectforge.data.image_io import MAX_PIXELS_ENV, max_pixels

    try:
        h, w = (int(v) for v in input_size)
    except (TypeError, ValueError):
        raise InputError(path, f"model input size {input_size!r} is not two integers") from None
    if h <= 0 or w <= 0:
        raise InputError(path, f"model input size {h}x{w} is not positive")
    if h * w > max_pixels():
        raise InputError(path, f"model input size {h}x{w} = {h * w:,} pixels is over the limit of {max_pixels():,} "
                               f"(raise {MAX_PIXELS_ENV} if it is genuine)")
    return h, w


def check_finite_state(path: str | Path | None, banks: Mapping[str, np.ndarray],
                       thresholds: Mapping[str, Any] | None = None, cause: str = "the model file is corrupt") -> None:
    """Refuse memory banks with NaN/inf values and NaN thresholds (``inf`` means "never")."""
    for name, bank in banks.items():
        arr = np.asarray(bank)
        if arr.size and not np.isfinite(arr).all():
            bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
            raise InputError(path, f"{name} holds {bad:,} non-finite value(s) (NaN/inf); {cause}")
    for name, value in (thresholds or {}).items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float, np.number))):
            raise InputError(path, f"{name} {value!r} is not a number; {cause}")
        if value is not None and isinstance(value, float) and math.isnan(value):
            raise InputError(path, f"{name} is NaN; {cause}")


def check_params(path: str | Path | None, params: Mapping[str, Any], positive: tuple[str, ...] = (),
                 cause: str = "the model file is corrupt") -> None:
    """Parameters read from a model file: every float finite (a NaN ``sigma`` would break
    every prediction), and each parameter in ``positive`` (a number or a tuple of them) > 0."""
    for name, value in params.items():
        items = value if isinstance(value, (list, tuple)) else (value,)
        for x in items:
            if isinstance(x, float) and not math.isfinite(x):
                raise InputError(path, f"parameter {name} is {x}; {cause}")
        if name in positive and value is not None:
            if not items or any(isinstance(x, bool) or not isinstance(x, (int, float)) or not x > 0 for x in items):
                raise InputError(path, f"parameter {name} must be positive, got {value!r}; {cause}")


def check_grid(path: str | Path | None, grid: Any, input_size: tuple[int, int]) -> tuple[int, int]:
    """``(h, w)`` of the feature grid: two positive ints no larger than the input size."""
    try:
        h, w = (int(v) for v in grid)
    except (TypeError, ValueError):
        raise InputError(path, f"feature grid {grid!r} is not two integers; the model file is corrupt") from None
    if not (0 < h <= input_size[0] and 0 < w <= input_size[1]):
        raise InputError(path, f"feature grid {h}x{w} does not fit the input size {input_size[0]}x{input_size[1]}; "
                               "the model file is corrupt")
    return h, w
