"""Benchmark of the pixel metrics (pixel AUROC, pixel AP, AUPRO) on synthetic anomaly maps.

Measures wall time and peak traced memory (numpy allocations via tracemalloc) of
``defectforge.metrics`` at two sizes: BSData's test split at the ExDD evaluation grid
(372 images of 112 x 316) and a larger full-resolution set (460 x 1130), and compares the pixel
AUROC time and value with ``sklearn.metrics.roc_auc_score`` on the same pooled pixels.
Writes ``docs/bench/metrics.md``.

    .venv/bin/python bench/bench_metrics.py [--full-images 60] [--out docs/bench/metrics.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import time
import tracemalloc
from pathlib import Path

import numpy as np
from scipy import ndimage

from defectforge._atomic import atomic_write_text
from defectforge.metrics import aupro, evaluate_anomaly, pixel_ap, pixel_auroc

REPO = Path(__file__).resolve().parents[1]


def make_set(n_images: int, h: int, w: int, n_defect: int, seed: int):
    """Float32 maps with blob-shaped defects (several regions) that are somewhat detectable."""
    rng = np.random.default_rng(seed)
    masks, maps = [], []
    for i in range(n_images):
        a = rng.random((h, w), dtype=np.float32)
        if i < n_defect:
            seeds = rng.random((h, w)) > 0.9995
            m = ndimage.binary_dilation(seeds, iterations=int(rng.integers(2, 8)))
            a += m * rng.random(dtype=np.float32) * 0.8
            masks.append(m)
        else:
            masks.append(None)
        maps.append(a)
    return masks, maps


def timed(fn, *args, **kwargs):
    tracemalloc.start()
    t0 = time.perf_counter()
    value = fn(*args, **kwargs)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return value, seconds, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full-images", type=int, default=60)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "bench" / "metrics.md")
    ap.add_argument("--no-sklearn", action="store_true")
    args = ap.parse_args()

    rows = []
    configs = [("ExDD grid 372 x 112x316", 372, 112, 316, 104),
               (f"full res {args.full_images} x 460x1130", args.full_images, 460, 1130,
                args.full_images // 3)]
    for name, n, h, w, n_def in configs:
        masks, maps = make_set(n, h, w, n_def, seed=0)
        pixels = n * h * w
        for metric, fn in (("pixel_auroc", pixel_auroc), ("pixel_ap", pixel_ap),
                           ("aupro@0.3", aupro)):
            value, sec, peak = timed(fn, masks, maps)
            rows.append((name, pixels, metric, value, sec, peak))
        labels = np.array([m is not None for m in masks])
        scores = np.array([a.max() for a in maps])
        value, sec, peak = timed(evaluate_anomaly, labels, scores, masks, maps)
        rows.append((name, pixels, "evaluate_anomaly (all)", value["aupro"], sec, peak))
        if not args.no_sklearn:
            from sklearn.metrics import roc_auc_score
            y = np.concatenate([np.zeros(a.size, bool) if m is None else m.ravel()
                                for m, a in zip(masks, maps)])
            s = np.concatenate([a.ravel() for a in maps])
            value, sec, peak = timed(roc_auc_score, y, s)
            rows.append((name, pixels, "sklearn roc_auc_score (reference)", value, sec, peak))
        del masks, maps

    load = os.getloadavg()
    lines = [
        "# Pixel metrics benchmark",
        "",
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), "
        f"Python {platform.python_version()}, numpy {np.__version__}",
        f"- load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
        "(other jobs were running on the same cores)",
        "- command: `.venv/bin/python bench/bench_metrics.py"
        + (f" --full-images {args.full_images}`" if args.full_images != 60 else "`"),
        "- data: synthetic float32 maps, blob defects (8-connected regions) in a third of the "
        "images; peak memory = numpy allocations traced by tracemalloc during the call "
        "(inputs excluded).",
        "",
        "| set | pixels | metric | value | seconds | peak MiB |",
        "| --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for name, pixels, metric, value, sec, peak in rows:
        lines.append(f"| {name} | {pixels:,} | {metric} | {value:.6f} | {sec:.2f} | "
                     f"{peak / 2**20:.0f} |")
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
