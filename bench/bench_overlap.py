"""Scoring's two halves side by side (``defectforge.detect._overlap``) against one after the
other, on the same model and images in one process.

First the two halves alone on all the threads and on one (backbone + patch rows: ``_rows``; the
normal and defect banks' 1-NN search), to show how each scales; then ``predict`` with and
without the overlap, in calls of ``--chunk`` images (16: what ``detect predict`` and ``detect
eval`` make) and of all ``--n`` images, alternating the two settings ``--reps`` times (median).
Prints a markdown table.

    python bench/bench_overlap.py MODEL.pt [--data ../shared/datasets/bsdata] [--n 48] [--reps 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "datasets" / "bsdata"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--reps", type=int, default=4)
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    import numba
    import numpy as np
    import torch

    from defectforge.bank.features import to_rgb
    from defectforge.data import load_dataset
    from defectforge.detect import exdd_predict
    from defectforge.detect.exdd import ExDD

    test = [s for s in load_dataset(args.data) if s.split == "test"][: args.n]
    model = ExDD.load(args.model)
    model.progress = False
    model.predict(test[:8])  # warm-up
    load = [os.getloadavg()[0]]
    threads = torch.get_num_threads()
    rgbs = [to_rgb(s) for s in test]
    bs = model.batch_size
    halves = {}
    for nt in sorted({threads, 1}, reverse=True):
        torch.set_num_threads(nt)
        numba.set_num_threads(min(nt, numba.config.NUMBA_NUM_THREADS))
        t0 = time.perf_counter()
        rows = [model._rows(rgbs[i:i + bs]) for i in range(0, len(rgbs), bs)]
        t1 = time.perf_counter()
        for r in rows:
            model._nn_normal.search(r, 1)
            if model._nn_defect is not None:
                model._nn_defect.search(r, 1)
        t2 = time.perf_counter()
        halves[nt] = (1000 * (t1 - t0) / len(rgbs), 1000 * (t2 - t1) / len(rgbs))
    torch.set_num_threads(threads)
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)

    overlap = exdd_predict.PatchScoreMixin._batches
    plain = lambda self, featured, n: featured  # noqa: E731  (one after the other)
    res: dict[tuple[str, int], list[float]] = {}
    for rep in range(args.reps):
        for mode in (["overlapped", "one after the other"] if rep % 2 == 0 else ["one after the other", "overlapped"]):
            exdd_predict.PatchScoreMixin._batches = overlap if mode == "overlapped" else plain
            for chunk in (args.chunk, len(test)):
                t0 = time.perf_counter()
                for i in range(0, len(test), chunk):
                    model.predict(test[i:i + chunk])
                res.setdefault((mode, chunk), []).append(1000 * (time.perf_counter() - t0) / len(test))
            load.append(os.getloadavg()[0])
    exdd_predict.PatchScoreMixin._batches = overlap
    print(f"{args.model.name}, {len(test)} BSData test images, batch {bs}, {threads} PyTorch threads, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {min(load):.2f}-{max(load):.2f}\n")
    print("| half | ms per image, all threads | one thread | scaling |\n|---|---|---|---|")
    for k, name in enumerate(("backbone + patch rows (`_rows`, images decoded beforehand)", "1-NN search, both banks")):
        a, b = halves[threads][k], halves[1][k]
        print(f"| {name} | {a:.1f} | {b:.1f} | {b / a:.2f}x |")
    print("\n| predict | calls of | ms per image (each pass) | median | vs one after the other |\n|---|---|---|---|---|")
    for chunk in (args.chunk, len(test)):
        base = float(np.median(res[("one after the other", chunk)]))
        for mode in ("one after the other", "overlapped"):
            v = res[(mode, chunk)]
            med = float(np.median(v))
            print(f"| {mode} | {chunk} | {' / '.join(f'{x:.1f}' for x in v)} | {med:.1f} | {base / med:.2f}x |")


if __name__ == "__main__":
    sys.exit(main())
