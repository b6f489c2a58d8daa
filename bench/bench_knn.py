"""Nearest-neighbour search at predict time: faiss flat L2 vs the pruned and the
bfloat16-screened exact searches (and the approximate ``ivf``), same banks, same query rows, one run.

Loads fitted ExDD / PatchCore models (``defectforge detect fit`` outputs), extracts the patch
rows of ``--n`` BSData test images once, then times each backend's 1-NN search of those rows
against the model's normal bank (and ExDD's defect bank), checks that they return the same
neighbours as faiss, and times ``model.predict`` end to end with each backend. ``--metrics`` also runs
``evaluate_detector`` on the whole test split with each backend (exact pixel path) and prints
both sets of metrics. Prints markdown.

    python bench/bench_knn.py MODEL.pt [MODEL.pt ...] [--data ../shared/datasets/bsdata] [--n 32] [--metrics]
        [--subsets 1024,4096,20000] [--backends faiss,pruned,screened]

``--backends``: the first is the reference the others are compared with (``pruned,ivf,ivf:16`` on a
CPU without bfloat16, where faiss's flat search is slow and ``screened`` is refused); for an
approximate backend "same neighbour" is its recall of the exact nearest row, and the metrics
(``--metrics``) show what the approximation costs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from bench_diffusion import best_of  # noqa: E402  (the same timing helper)
from _machine import uptime  # noqa: E402

DATA = REPO.parent / "shared" / "datasets" / "bsdata"


def _best(fn, reps: int = 2) -> float:
    """Best of ``reps`` timed calls after one warm-up call (seconds)."""
    fn()
    return best_of(fn, reps)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--n", type=int, default=32, help="test images")
    ap.add_argument("--metrics", action="store_true", help="also evaluate on the whole test split per backend")
    ap.add_argument("--subsets", default="",
                    help="also search random subsets of these sizes (comma-separated) of the last model's normal bank "
                         "with the same query rows: where each backend is fastest on this machine")
    ap.add_argument("--backends", default="faiss,pruned,screened",
                    help="comma-separated; the first is the reference (default faiss,pruned,screened)")
    args = ap.parse_args(argv)
    ref, *others = args.backends.split(",")

    from defectforge.bank.features import to_rgb
    from defectforge.bank.knn import NearestNeighbors
    from defectforge.data import load_dataset
    from defectforge.detect import load_detector

    up0 = uptime()
    test = [s for s in load_dataset(args.data) if s.split == "test"][: args.n]
    rgbs = [to_rgb(s) for s in test]
    lines = ["| model | bank | rows | backend | build s | search ms/image | vs reference | rows given a full distance "
             "per query | same neighbour as the reference | max abs. distance diff. |", "|---|---|---|---|---|---|---|---|---|---|"]
    pred_lines = ["| model | backend | predict ms/image | vs reference | max abs. map diff. | max abs. score diff. |",
                  "|---|---|---|---|---|---|"]
    for path in args.models:
        model = load_detector(path)
        rows = np.concatenate([model._rows(rgbs[i:i + 4]) for i in range(0, len(rgbs), 4)])
        banks = [("normal", model.bank_normal_)] + ([("defect", model.bank_defect_)] if len(model.bank_defect_) else [])
        for name, bank in banks:
            res = {}
            for backend in [ref, *others]:
                t0 = time.perf_counter()
                nn = NearestNeighbors(bank, backend)
                t_build = time.perf_counter() - t0
                res[backend] = (t_build, _best(lambda: nn.search(rows, 1)), nn.search(rows, 1), nn._index)
            _, tf, (df, i_f), _ = res[ref]
            for backend, (t_build, t, (d, i), index) in res.items():
                cand = (f"{index.last_fraction * len(bank):.1f}" if hasattr(index, "last_fraction") else
                        f"{index.last_candidates:.1f}" if hasattr(index, "last_candidates") else f"{len(bank):,}")
                lines.append(f"| {path.name} | {name} | {len(bank):,} | {backend} | {t_build:.2f} | "
                             f"{1000 * t / len(rgbs):.1f} | {tf / t:.2f}x | {cand} | "
                             f"{100 * (i_f == i).mean():.2f} % | {np.abs(df - d).max():.1e} |")
        res = {}
        for backend in [ref, *others]:
            model.set_params(nn_backend=backend)
            dt = _best(lambda: model.predict(rgbs), reps=1)
            res[backend] = (dt, model.predict(rgbs))
        tf, pf = res[ref]
        for backend, (t, pp) in res.items():
            dmap = max(float(np.abs(a - b).max()) for a, b in zip(pf.anomaly_map, pp.anomaly_map))
            pred_lines.append(f"| {path.name} | {backend} | {1000 * t / len(rgbs):.1f} | {tf / t:.2f}x | "
                              f"{dmap:.1e} | {np.abs(pf.pred_score - pp.pred_score).max():.1e} |")
    sub_lines = []
    if args.subsets:
        sub_lines = ["| bank rows | " + " | ".join(f"{b} ms/image" for b in [ref, *others]) + " | fastest |",
                     "|---|" + "---|" * (len(others) + 2)]
        rng = np.random.default_rng(0)
        bank = model.bank_normal_
        for n in [int(v) for v in args.subsets.split(",")]:
            sub = bank[np.sort(rng.permutation(len(bank))[:n])]
            times = {}
            for backend in [ref, *others]:
                nn = NearestNeighbors(sub, backend)
                times[backend] = 1000 * _best(lambda: nn.search(rows, 1)) / len(rgbs)
            sub_lines.append(f"| {len(sub):,} | " + " | ".join(f"{times[b]:.1f}" for b in times)
                             + f" | {min(times, key=times.get)} |")
    metric_lines = ["| model | backend | I-AUROC | P-AUROC | AUPRO | I-AP | P-AP | F1 max | images | eval s |",
                    "|---|---|---|---|---|---|---|---|---|---|"]
    if args.metrics:
        from defectforge.detect.evaluate import evaluate_detector

        ds = load_dataset(args.data)
        for path in args.models:
            model = load_detector(path)
            for backend in [ref, *others]:
                t0 = time.perf_counter()
                r = evaluate_detector(model.set_params(nn_backend=backend), ds, split="test", pixel_path="exact")["metrics"]
                metric_lines.append(f"| {path.name} | {backend} | " + " | ".join(
                    f"{r[k]:.7f}" for k in ("image_auroc", "pixel_auroc", "aupro", "image_ap", "pixel_ap", "f1_max"))
                    + f" | {r['n_images']} | {time.perf_counter() - t0:.0f} |")
    up1 = uptime()
    print(f"{len(rgbs)} BSData test images, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"uptime before: {up0}\nuptime after:  {up1}\n")
    print("\n".join(lines) + "\n\n" + "\n".join(pred_lines))
    if sub_lines:
        print(f"\nRandom subsets of {args.models[-1].name}'s normal bank, the same query rows (1-NN search):\n")
        print("\n".join(sub_lines))
    if args.metrics:
        print("\n" + "\n".join(metric_lines))


if __name__ == "__main__":
    main()
