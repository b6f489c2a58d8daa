"""Benchmark of the data layer on BSData (837 images): reading the manifest, ``check_dataset``
(header-only and with ``decode=True``), labelme rasterisation of all 167 annotations, and
conversion of the bundled sample to each format. Writes ``docs/bench/data.md``.

    .venv/bin/python bench/bench_data.py [--bsdata ../shared/datasets/bsdata] [--out docs/bench/data.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import tempfile
import time
from pathlib import Path

from defectforge._atomic import atomic_write_text
from defectforge.data import check_dataset, labelme_to_mask, load_dataset, write_dataset
from defectforge.datasets import load_sample

REPO = Path(__file__).resolve().parents[1]


def timed(fn, *args, repeat: int = 3, **kwargs):
    best, value = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        value = fn(*args, **kwargs)
        best = min(best, time.perf_counter() - t0)
    return value, best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bsdata", type=Path, default=REPO.parent / "shared" / "datasets" / "bsdata")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "bench" / "data.md")
    args = ap.parse_args()
    rows = []
    ds, s = timed(load_dataset, args.bsdata)
    rows.append(("read manifest (bsdata)", f"{len(ds)} samples", s))
    rep, s = timed(check_dataset, ds)
    rows.append(("check_dataset, headers + hashes + masks", f"{len(rep.problems)} problems", s))
    rep, s = timed(check_dataset, ds, decode=True, repeat=1)
    rows.append(("check_dataset, decode=True", f"{len(rep.problems)} problems", s))
    jsons = sorted((args.bsdata / "labelme").glob("*.json"))
    _, s = timed(lambda: [labelme_to_mask(j) for j in jsons], repeat=1)
    rows.append(("labelme_to_mask, all files", f"{len(jsons)} masks", s))
    sample = load_sample()
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in ("mvtec", "manifest", "yolo", "coco"):
            _, s = timed(write_dataset, sample, Path(tmp) / fmt, fmt, repeat=1)
            rows.append((f"write bundled sample as {fmt}", f"{len(sample)} images", s))
            back, s = timed(load_dataset, Path(tmp) / fmt, repeat=1)
            rows.append((f"read it back ({fmt})", f"{len(back)} images", s))
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    lines = [
        "# Data layer benchmark",
        "",
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {os.cpu_count()}-core CPU ({platform.machine()}), Python {platform.python_version()}",
        f"- load average at the end: {load} (other jobs were running on the same cores)",
        "- command: `.venv/bin/python bench/bench_data.py`",
        "- data: BSData (837 JPEGs 1130x460, 167 masks) and the bundled 90-image sample; best of 3 "
        "where repeated, single runs otherwise (file cache warm).",
        "",
        "| step | size | seconds |",
        "| --- | --- | ---: |",
    ]
    lines += [f"| {a} | {b} | {c:.3f} |" for a, b, c in rows]
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
