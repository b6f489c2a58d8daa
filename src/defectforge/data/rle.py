"""COCO run-length encoding in numpy (no pycocotools needed).

A COCO RLE is ``{"size": [H, W], "counts": ...}``: run lengths of the mask read in
**column-major** (Fortran) order, starting with a run of zeros (possibly of length 0).
``counts`` is either a list of ints ("uncompressed") or COCO's compact string: each
count, after subtracting the count two places earlier (from the fourth on), is written
as little-endian groups of 5 bits with a continuation bit (0x20), offset by 48 to stay
printable; the last group's 0x10 bit carries the sign.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def rle_counts(mask: np.ndarray) -> list[int]:
    """Column-major run lengths of a boolean mask, starting with zeros."""
    flat = (np.asarray(mask) > 0).ravel(order="F").astype(np.int8)
    if flat.size == 0:
        return []
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0] == 1:
        runs = [0] + runs
    return [int(r) for r in runs]


def counts_from_indices(idx: np.ndarray, total: int) -> list[int]:
    """Run lengths (zeros first) of a mask of ``total`` pixels whose foreground pixels have the
    sorted column-major indices ``idx``. Costs O(len(idx)), not O(total): the COCO writer
    encodes each component from its bounding box instead of scanning the whole image."""
    idx = np.asarray(idx, dtype=np.int64)
    if idx.size == 0:
        return [int(total)] if total else []
    breaks = np.flatnonzero(np.diff(idx) != 1)
    starts = idx[np.concatenate([[0], breaks + 1])]
    ends = idx[np.concatenate([breaks, [idx.size - 1]])] + 1
    runs = np.empty(2 * starts.size + 1, dtype=np.int64)
    runs[0] = starts[0]
    runs[1::2] = ends - starts
    runs[2:-1:2] = starts[1:] - ends[:-1]
    runs[-1] = total - ends[-1]
    out = runs.tolist()
    if out[-1] == 0:
        out.pop()
    return [int(r) for r in out]


def counts_to_mask(counts: list[int], shape: tuple[int, int]) -> np.ndarray:
    """Boolean ``H x W`` mask from column-major run lengths (zeros first)."""
    h, w = int(shape[0]), int(shape[1])
    counts = np.asarray(counts, dtype=np.int64)
    if counts.size and (counts < 0).any():
        raise ValueError("negative run length in RLE counts")
    if int(counts.sum()) != h * w:
        raise ValueError(f"RLE counts sum to {int(counts.sum())}, expected {h * w} for size {h}x{w}")
    values = (np.arange(counts.size) % 2).astype(bool)
    flat = np.repeat(values, counts)
    return flat.reshape((h, w), order="F")


def counts_to_string(counts: list[int]) -> str:
    """COCO's compact string form of run lengths."""
    out = bytearray()
    for i, c in enumerate(counts):
        x = int(c)
        if i > 2:
            x -= int(counts[i - 2])
        more = True
        while more:
            byte = x & 0x1F
            x >>= 5  # arithmetic shift keeps the sign
            more = (x != -1) if (byte & 0x10) else (x != 0)
            if more:
                byte |= 0x20
            out.append(byte + 48)
    return out.decode("ascii")


def string_to_counts(s: str | bytes) -> list[int]:
    """Run lengths from COCO's compact string."""
    data = s.encode("ascii") if isinstance(s, str) else bytes(s)
    counts: list[int] = []
    p = 0
    while p < len(data):
        x, k, more = 0, 0, True
        while more:
            if p >= len(data):
                raise ValueError("truncated RLE string")
            c = data[p] - 48
            if c < 0 or c > 63:
                raise ValueError(f"invalid character {chr(data[p])!r} in RLE string")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def encode_rle(mask: np.ndarray, compressed: bool = True) -> dict[str, Any]:
    """COCO RLE dict of a boolean mask (compact string counts unless ``compressed=False``)."""
    m = np.asarray(mask)
    counts = rle_counts(m)
    return {"size": [int(m.shape[0]), int(m.shape[1])],
            "counts": counts_to_string(counts) if compressed else counts}


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """Boolean mask from a COCO RLE dict (string or list counts)."""
    try:
        h, w = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed RLE (need 'size' [H, W] and 'counts'): {exc}") from None
    if isinstance(counts, (str, bytes)):
        counts = string_to_counts(counts)
    return counts_to_mask(list(counts), (h, w))


def rle_area(rle: dict[str, Any]) -> int:
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = string_to_counts(counts)
    return int(sum(counts[1::2]))
