"""What ``detect predict`` spends per image beyond the model: the heatmap panels.

One process, the model loaded once; for each setting ``predict_files`` (what ``detect predict``
runs) scores the same ``--n`` BSData TEST images into a fresh folder, the settings in
alternating order for ``--reps`` rounds (medians). Settings:

- ``before``: the panels as written before 2026-12-07 (PNG, zlib level 6, one image after
  the other);
- ``png (level 6)``: PNG at level 6, the images of a chunk on the worker's threads;
- ``png``: the default now (PNG, level 1: the same pixels, larger files; on the threads);
- ``jpg``: ``--heatmaps jpg`` (JPEG quality 90);
- ``none``: ``--heatmaps none`` (masks and scores only);
- ``model only``: ``model.predict`` on the same images in chunks of 16, nothing written.

Output: ms per image (median over rounds), MB per image written, and each setting's time over
the model's alone.

    python bench/bench_predict_outputs.py MODEL.pt [--n 48] [--reps 3] [--out docs/bench/predict_outputs.md]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import uptime  # noqa: E402  (the load line every bench records)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--data", default="../shared/datasets/bsdata")
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()

    from defectforge.data import load_dataset
    from defectforge.data.sample import Sample
    from defectforge.detect import predict_job
    from defectforge.detect.base import load_detector

    files = [s.path for s in load_dataset(a.data).filter(split="test")][:a.n]
    model = load_detector(a.model)
    model.predict([Sample(path=Path(files[0]))])  # warm-up
    settings = ["before", "png (level 6)", "png", "jpg", "none", "model only"]
    times: dict[str, list[float]] = {k: [] for k in settings}
    sizes: dict[str, float] = {}
    before = uptime()
    started = datetime.now(timezone.utc)
    tmp = Path(tempfile.mkdtemp(prefix="bench_predict_outputs_"))
    try:
        for rep in range(a.reps):
            order = settings if rep % 2 == 0 else settings[::-1]
            for k in order:
                out = tmp / f"{rep}_{k.replace(' ', '_')}"
                t0 = time.perf_counter()
                if k == "model only":
                    for s in range(0, len(files), predict_job.CHUNK):
                        model.predict([Sample(path=Path(f)) for f in files[s:s + predict_job.CHUNK]])
                else:
                    level, threads = predict_job.PANEL_PNG_LEVEL, predict_job.PANEL_THREADS
                    predict_job.PANEL_PNG_LEVEL = 6 if k in ("before", "png (level 6)") else level
                    predict_job.PANEL_THREADS = 1 if k == "before" else threads
                    try:
                        predict_job.predict_files(a.model, files, out, model=model,
                                                  heatmaps="png" if k == "before" else k.split()[0])
                    finally:
                        predict_job.PANEL_PNG_LEVEL, predict_job.PANEL_THREADS = level, threads
                times[k].append((time.perf_counter() - t0) / len(files) * 1e3)
                if out.exists():
                    sizes[k] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / len(files) / 1e6
                    shutil.rmtree(out)
                print(k, rep, f"{times[k][-1]:.1f} ms/image", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    after = uptime()
    base = statistics.median(times["model only"])
    lines = ["# Benchmark: what `detect predict` writes per image", "",
             f"- Date: {started:%Y-%m-%d %H:%M} UTC; machine: {os.uname().machine}, {os.cpu_count()} CPUs",
             f"- Command: `python bench/bench_predict_outputs.py {a.model} --n {a.n} --reps {a.reps}`",
             f"- Data: the first {len(files)} BSData TEST images (1130 x 460); model: {Path(a.model).name}",
             f"- Load before: `{before}`; after: `{after}`", "",
             "| setting | ms per image (median of rounds) | rounds | MB written per image | vs the model alone |",
             "|---|---|---|---|---|"]
    for k in settings:
        med = statistics.median(times[k])
        lines.append(f"| {k} | {med:.1f} | {' / '.join(f'{t:.0f}' for t in times[k])} | "
                     f"{sizes.get(k, 0.0):.3f} | {med / base:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
