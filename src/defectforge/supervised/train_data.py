"""Training data of the box detectors: ground-truth boxes, the resized in-memory items,
flipped batches, the stratified TRAIN/validation split, the split fingerprints of a run's
resume key and the memory check made before training starts."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from defectforge.data.sample import Box, Sample
from defectforge.errors import ConfigError, InputError

if TYPE_CHECKING:
    from defectforge.supervised.train import TrainConfig


def gt_boxes(sample: Sample) -> list[Box]:
    """Ground-truth boxes of a sample (none for good samples)."""
    if not sample.is_defect:
        return []
    return [Box(b.x0, b.y0, b.x1, b.y1, b.label if sample.boxes is not None else sample.label)
            for b in sample.derived_boxes()]


@dataclass
class _Item:
    image: np.ndarray  # resized uint8 HxWx3
    boxes: np.ndarray  # (n, 4) float32, resized coordinates
    labels: np.ndarray  # (n,) int64, 1..C
    scale: float
    name: str


def _resize(rgb: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    import cv2

    h, w = rgb.shape[:2]
    s = size / min(h, w)
    if abs(s - 1.0) < 1e-9:
        return rgb, 1.0
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    return cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR), s


def _prepare(samples: Sequence[Sample], classes: Sequence[str], size: int) -> list[_Item]:
    idx = {c: i + 1 for i, c in enumerate(classes)}
    items = []
    for s in samples:
        bx = gt_boxes(s)
        unknown = sorted({b.label for b in bx} - set(idx))
        if unknown:
            raise InputError(s.path or s.name, f"box classes {unknown} are not among the detector's classes {list(classes)}")
        if s.is_defect and not bx:
            raise InputError(s.path or s.name, f"defect sample ({s.label}) has no labels (no mask pixels and no boxes)")
        img, sc = _resize(s.rgb(), size)
        b = np.array([[x.x0, x.y0, x.x1, x.y1] for x in bx], np.float32).reshape(-1, 4) * sc
        items.append(_Item(np.ascontiguousarray(img), b, np.array([idx[x.label] for x in bx], np.int64), sc, s.name))
    return items


def _batch(items: Sequence[_Item], flips: Sequence[tuple[bool, bool]]):
    import torch

    imgs, tgts = [], []
    for it, (fh, fv) in zip(items, flips):
        x = torch.from_numpy(it.image.copy()).permute(2, 0, 1).float().div_(255.0)
        b = torch.from_numpy(it.boxes.copy())
        h, w = it.image.shape[:2]
        if fh:
            x = x.flip(-1)
            b[:, [0, 2]] = w - b[:, [2, 0]]
        if fv:
            x = x.flip(-2)
            b[:, [1, 3]] = h - b[:, [3, 1]]
        imgs.append(x)
        tgts.append({"boxes": b, "labels": torch.from_numpy(it.labels.copy())})
    return imgs, tgts


def split_train_val(samples: Sequence[Sample], val_fraction: float, seed: int,
                    val_split: str = "auto") -> tuple[list[Sample], list[Sample]]:
    """Stratified (defect / good) seeded split of TRAIN into train and validation; within a
    stratum whole groups are held out under ``val_split`` (:mod:`defectforge.data.splits`)."""
    from defectforge.data.splits import holdout, split_by

    rng = np.random.default_rng(seed)
    tr, va = [], []
    for what, group in (("defect", [s for s in samples if s.is_defect]), ("good", [s for s in samples if not s.is_defect])):
        n_val = int(round(val_fraction * len(group)))
        if val_fraction > 0 and len(group) >= 2:
            n_val = max(1, n_val)
        n_val = min(n_val, len(group) - 1) if group else 0
        vi, ti = holdout(group, n_val, rng, split_by(group, val_split, what) if n_val > 0 else "image")
        va += [group[i] for i in vi]
        tr += [group[i] for i in ti]
    return tr, va


def _fingerprint(samples: Sequence[Sample]) -> str:
    h = hashlib.sha256()
    for s in samples:
        h.update(f"{s.name}|{s.label}|{len(gt_boxes(s))}\n".encode())
    return h.hexdigest()[:16]


def _mem_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_memory(items: Sequence[_Item], cfg: TrainConfig) -> None:
    """Refuse a configuration whose rough training footprint exceeds available memory."""
    if not items:
        return
    px = max(it.image.shape[0] * it.image.shape[1] for it in items)
    per_px = 3000 if cfg.trainable_stages else 1500  # measured order of magnitude, bytes per input pixel
    need = int(cfg.batch_size * px * per_px) + sum(it.image.nbytes for it in items)
    avail = _mem_available()
    if avail is not None and need > avail:
        raise ConfigError(f"this detector config needs about {need / 2**30:.1f} GiB (batch {cfg.batch_size} x "
                          f"{px} px) but {avail / 2**30:.1f} GiB are available: lower --batch-size or --image-size")
