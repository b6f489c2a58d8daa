"""Locally aware patch features (PatchCore / ExDD).

Images are turned into ``(rows, C)`` float32 arrays, one row per position of the
shallowest requested layer:

1. RGB uint8 -> float in [0, 1], resized to the model input size (bilinear with
   antialiasing, as torchvision's ``Resize``), normalised with the backbone's mean/std.
2. Each layer output is averaged over its 3x3 neighbourhood (zero padding counted, as
   PatchCore), deeper layers are upsampled (bilinear) to the first layer's grid and all
   are concatenated on channels.

Also: input-size helpers, mask-to-grid downsampling for the defect bank, and a seeded
Gaussian (Johnson-Lindenstrauss) random projection used only to choose the coreset.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from defectforge.data.image_io import as_rgb8
from defectforge.errors import InputError


def to_rgb(item: Any) -> np.ndarray:
    """An input item (``Sample`` or H x W [x C] array, grey allowed) as H x W x 3 uint8."""
    from defectforge.data.sample import Sample

    if isinstance(item, Sample):
        try:
            return item.rgb()
        except InputError:  # already names the file
            raise
        except ValueError as exc:
            raise InputError(item.path, str(exc)) from None
    arr = np.asarray(item)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)) or arr.size == 0:
        raise InputError(None, f"expected an H x W [x 1|3|4] image, got an array of shape {arr.shape}")
    return as_rgb8(arr)


def rgb_batches(items: Sequence[Any], batch_size: int) -> Iterator[list[np.ndarray]]:
    """``items`` as RGB arrays (:func:`to_rgb`), ``batch_size`` at a time, in order; the next
    batch is read and decoded in a background thread while the caller works on the current
    one (image decoding releases the GIL, so on a 2-core CPU it runs while the other core
    would wait on single-threaded steps). An unreadable item raises its ``InputError`` when
    its batch is reached, as without read-ahead."""
    from concurrent.futures import ThreadPoolExecutor

    size = max(1, int(batch_size))
    starts = range(0, len(items), size)

    def read(s: int) -> list[np.ndarray]:
        return [to_rgb(it) for it in items[s:s + size]]

    if len(starts) <= 1:
        for s in starts:
            yield read(s)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="defectforge-read") as pool:
        ahead = pool.submit(read, starts[0])
        for k in range(len(starts)):
            batch = ahead.result()
            if k + 1 < len(starts):
                ahead = pool.submit(read, starts[k + 1])
            yield batch


def item_name(item: Any, index: int) -> str:
    from defectforge.data.sample import Sample

    if isinstance(item, Sample):
        return item.name
    return f"image_{index:05d}"


def input_size_for(shape: tuple[int, int], short_side: int, multiple: int = 8) -> tuple[int, int]:
    """``(H, W)`` keeping the aspect ratio of ``shape`` with the shorter side ``short_side``,
    both rounded to a multiple of ``multiple`` (so the feature grid is exact)."""
    h, w = shape
    if h <= w:
        H, W = short_side, short_side * w / h
    else:
        H, W = short_side * h / w, short_side
    return (max(multiple, int(round(H / multiple)) * multiple), max(multiple, int(round(W / multiple)) * multiple))


def to_tensor(images: Sequence[np.ndarray], size: tuple[int, int], mean: Sequence[float],
              std: Sequence[float]) -> torch.Tensor:
    """A normalised ``(B, 3, H, W)`` float32 batch; every image is resized to ``size``."""
    import warnings

    out = []
    for img in images:
        img = np.ascontiguousarray(img)
        with warnings.catch_warnings():  # a read-only array (e.g. from PIL) is only read: .float() copies it
            warnings.simplefilter("ignore", UserWarning)
            x = torch.from_numpy(img)
        x = x.permute(2, 0, 1)[None].float().div_(255.0)
        if tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
        out.append(x)
    x = torch.cat(out, 0)
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


def embed(feats: Sequence[torch.Tensor], upsample: str = "bilinear") -> torch.Tensor:
    """3x3-averaged, upsampled and concatenated layer outputs, ``(B, C, h, w)``."""
    first = feats[0]
    h, w = first.shape[-2:]
    parts = []
    for f in feats:
        f = F.avg_pool2d(f, kernel_size=3, stride=1, padding=1)
        if tuple(f.shape[-2:]) != (h, w):
            kw = {"align_corners": False} if upsample == "bilinear" else {}
            f = F.interpolate(f, size=(h, w), mode=upsample, **kw)
        parts.append(f)
    return torch.cat(parts, 1)


def to_rows(emb: torch.Tensor) -> np.ndarray:
    """``(B, C, h, w)`` -> ``(B*h*w, C)`` float32 rows (row-major over h, w per image)."""
    b, c, h, w = emb.shape
    return np.ascontiguousarray(emb.permute(0, 2, 3, 1).reshape(b * h * w, c).numpy(), dtype=np.float32)


def mask_to_grid(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Fraction of defect pixels in each feature-grid cell, ``grid`` = (h, w)."""
    import cv2

    m = np.asarray(mask, dtype=np.float32)
    return cv2.resize(m, (grid[1], grid[0]), interpolation=cv2.INTER_AREA)


def random_projection(dim_in: int, dim_out: int, seed: int) -> np.ndarray:
    """A ``(dim_in, dim_out)`` Gaussian matrix with unit-length columns (ExDD Eq. 7)."""
    rng = np.random.default_rng(seed)
    p = rng.standard_normal((dim_in, dim_out)).astype(np.float32)
    p /= np.linalg.norm(p, axis=0, keepdims=True)
    return p
