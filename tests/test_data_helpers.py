"""Helpers (no tests here): small synthetic datasets for the data-layer tests, built in tmp folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from defectforge.data import Dataset, Sample, write_image, write_mask

H, W = 36, 48


def blob_mask(kind: str) -> np.ndarray:
    """Hole-free masks with 1-3 connected components (``ring`` has a hole)."""
    m = np.zeros((H, W), bool)
    yy, xx = np.mgrid[:H, :W]
    if kind == "two":  # rectangle + ellipse
        m[3:9, 4:15] = True
        m |= ((yy - 24) / 6.0) ** 2 + ((xx - 33) / 9.0) ** 2 <= 1
    elif kind == "three":  # a single pixel, a diagonal line, a triangle
        m[2, 2] = True
        for i in range(8):
            m[20 + i, 5 + i] = True
        m |= (yy >= 10) & (yy <= 25) & (xx >= 30) & (xx - 30 <= yy - 10)
    elif kind == "one":
        m |= ((yy - 18) / 8.0) ** 2 + ((xx - 24) / 5.0) ** 2 <= 1
    elif kind == "ring":
        r = np.hypot(yy - 18, xx - 24)
        m |= (r <= 10) & (r >= 4)
    else:
        raise ValueError(kind)
    return m


def make_dataset(root: Path) -> Dataset:
    """Files under ``root/src``: 8-bit RGB/grey, 16-bit grey, JPEG; 2 defect types; masks with
    several components. Returns the :class:`Dataset` (masks referenced by path)."""
    rng = np.random.default_rng(7)
    src = root / "src"
    src.mkdir(parents=True)
    samples = []

    def img(name: str, kind: str) -> Path:
        p = src / name
        if kind == "rgb":
            write_image(p, rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
        elif kind == "grey":
            write_image(p, rng.integers(0, 256, (H, W, 1), dtype=np.uint8))
        elif kind == "g16":
            write_image(p, rng.integers(0, 65536, (H, W, 1), dtype=np.uint16))
        elif kind == "jpg":
            Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(p, quality=90)
        return p

    samples.append(Sample("good", "train", img("g1.png", "rgb")))
    samples.append(Sample("good", "train", img("g2.png", "grey")))
    samples.append(Sample("good", "train", img("g3.png", "g16")))
    samples.append(Sample("good", "test", img("g4.jpg", "jpg")))
    for name, split, label, kind, mk in [
        ("d1.png", "train", "scratch", "rgb", "two"),
        ("d2.png", "test", "scratch", "g16", "three"),
        ("d3.jpg", "test", "dent", "jpg", "one"),
        ("d4.png", "test", "dent", "grey", "two"),
    ]:
        p = img(name, kind)
        mp = write_mask(src / f"{Path(name).stem}_m.png", blob_mask(mk))
        samples.append(Sample(label, split, p, mp))
    return Dataset(samples, root=src, format="memory")


def by_key(ds: Dataset) -> dict[tuple[str, str, str], Sample]:
    """Samples keyed by (split, label, file stem)."""
    out = {}
    for s in ds:
        key = (s.split, s.label, s.name)
        assert key not in out, f"duplicate sample {key}"
        out[key] = s
    return out


def tree_digest(root: Path) -> dict[str, bytes]:
    """All file contents under ``root`` (to prove a source was not modified)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
