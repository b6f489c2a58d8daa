"""Where predict time goes at the README defaults, on this machine: image read and resize,
the backbone (batch 1, 4, 16), and the exact nearest-neighbour search against banks the size of
ExDD's and PatchCore's on full BSData (9,151 and 91,513 rows of 152 values, faiss flat L2).

The search cost does not depend on the rows' values (a flat index compares every pair), so
the banks are random rows of the real size. Prints one table (markdown) with the load.

    python bench/bench_predict_parts.py [--data ../shared/datasets/bsdata] [--n 32] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "datasets" / "bsdata"


def _ms(fn, n_items: int, reps: int = 2) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return 1000 * best / n_items


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--n", type=int, default=32, help="test images timed")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import faiss
    import torch

    from defectforge.bank.backbone import build_extractor
    from defectforge.bank.features import embed, input_size_for, to_rgb, to_tensor
    from defectforge.data import load_dataset

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    up0 = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    test = [s for s in load_dataset(args.data) if s.split == "test"][: args.n]
    ex, _ = build_extractor("efficientnet_lite0")
    ex = ex.eval().to(memory_format=torch.channels_last)
    rgbs = [to_rgb(s) for s in test]
    size = input_size_for(rgbs[0].shape[:2], 256)
    rows: dict[str, float] = {}
    rows["read + decode (per image)"] = _ms(lambda: [to_rgb(s) for s in test], len(test), 1)
    rows["resize + normalise"] = _ms(lambda: to_tensor(rgbs, size, ex.mean, ex.std), len(test))
    x = to_tensor(rgbs, size, ex.mean, ex.std).contiguous(memory_format=torch.channels_last)
    for bs in (1, 4, 16):
        def run(bs=bs):
            with torch.inference_mode():
                for i in range(0, len(x), bs):
                    embed(ex(x[i:i + bs]), "bilinear")
        rows[f"backbone + embed, batch {bs}"] = _ms(run, len(x))
    with torch.inference_mode():
        emb = embed(ex(x[:4]), "bilinear")
    q = emb.permute(0, 2, 3, 1).reshape(-1, emb.shape[1]).numpy().astype(np.float32)
    rng = np.random.default_rng(0)
    for name, nb in (("ExDD", 9151), ("PatchCore", 91513)):
        idx = faiss.IndexFlatL2(q.shape[1])
        idx.add(rng.standard_normal((nb, q.shape[1])).astype(np.float32))
        rows[f"exact 1-NN, {name} bank ({nb:,} rows)"] = _ms(lambda idx=idx: idx.search(q, 1), 4)
    up1 = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"input {size[0]}x{size[1]}, {q.shape[0] // 4} rows of {q.shape[1]} per image, {args.threads} threads, "
          f"{len(test)} BSData test images, {os.cpu_count()} CPUs")
    print(f"uptime before: {up0}\nuptime after:  {up1}\n")
    print("| part | ms / image |\n|---|---|")
    for k, v in rows.items():
        print(f"| {k} | {v:.1f} |")


if __name__ == "__main__":
    main()
