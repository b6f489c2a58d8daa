"""Benchmark: the exact greedy k-center alone, on the rows PatchCore's default fit chooses from.

Step 1 saves the rows (what ``detect fit DATA --model patchcore`` passes to
``greedy_kcenter``: 915,136 x 128 projected rows for the 362 BSData bank images at the README
defaults) by running that fit up to the coreset::

    .venv/bin/python bench/bench_coreset.py --dump /tmp/pc_rows.npy

Step 2 times ``greedy_kcenter(rows[:N], int(N * ratio), seed=0)`` (``--ratio``: PatchCore's 10 %
by default, 0.01 for ExDD's normal bank) in a fresh
process per run, and, with ``--other-src``, the same call from another checkout of the package
on the same rows, alternating, and checks that both choose the same rows in the same order::

    git worktree add /tmp/before <commit> && \\
    .venv/bin/python bench/bench_coreset.py --rows /tmp/pc_rows.npy --other-src /tmp/before/src --repeat 2

Prints one JSON line per run (wall and CPU seconds, peak RSS, the kernel's counters) and the
ratio of the medians. Record the machine's load (``uptime`` is printed before every run).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "datasets" / "bsdata"


def dump(out: Path, data: Path) -> None:
    """Run the default PatchCore fit until it calls the coreset; save the rows it passes."""
    import numpy as np

    import defectforge.bank.coreset as cs

    def grab(x, n, seed=0, **kw):
        np.save(out, np.asarray(x, np.float32))
        print(json.dumps({"rows": list(x.shape), "n": int(n), "seed": int(seed), "saved": str(out)}), flush=True)
        raise SystemExit(0)

    cs.greedy_kcenter = grab
    from defectforge.cli import main

    sys.argv = ["defectforge", "detect", "fit", str(data), "--model", "patchcore", "--out", str(out) + ".model.pt"]
    main()


def worker(src: str, rows: Path, frac: float, ratio: float, result: Path) -> None:
    sys.path.insert(0, src)
    import numpy as np

    from defectforge.bank.coreset import greedy_kcenter

    x = np.load(rows, mmap_mode="r")
    n_rows = int(len(x) * frac)
    xs = np.array(x[:n_rows])
    greedy_kcenter(xs[:3000], 300)  # compile or load numba's cache outside the timing
    st: dict = {}
    t0, c0 = time.perf_counter(), time.process_time()
    idx = greedy_kcenter(xs, max(1, int(n_rows * ratio)), seed=0, stats=st)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    np.save(result.with_suffix(".npy"), idx)
    result.write_text(json.dumps({"src": src, "rows": n_rows, "centres": int(len(idx)), "wall_s": round(wall, 2),
                                  "cpu_s": round(cpu, 2), "peak_rss_mb": round(resource.getrusage(
                                      resource.RUSAGE_SELF).ru_maxrss / 1024, 1), "stats": st}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dump", type=Path, help="save the rows of the default PatchCore fit here and stop")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--rows", type=Path)
    ap.add_argument("--fraction", type=float, default=1.0, help="use the first share of the rows")
    ap.add_argument("--ratio", type=float, default=0.1, help="coreset share (PatchCore 0.1, ExDD 0.01)")
    ap.add_argument("--other-src", default=None, help="another checkout's src/ to time on the same rows")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.dump:
        return dump(a.dump, a.data)
    if a.worker:
        return worker(a.worker, a.rows, a.fraction, a.ratio, a.result)
    import numpy as np

    srcs = {"this": str(REPO / "src")}
    if a.other_src:
        srcs["other"] = a.other_src
    runs: dict[str, list[dict]] = {k: [] for k in srcs}
    picks: dict[str, np.ndarray] = {}
    for i in range(a.repeat):
        for name, src in srcs.items():
            res = Path(f"/tmp/bench_coreset_{name}_{i}.json")
            print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(), flush=True)
            subprocess.run([sys.executable, __file__, "--worker", src, "--rows", str(a.rows), "--fraction",
                            str(a.fraction), "--ratio", str(a.ratio), "--result", str(res)], check=True)
            r = json.loads(res.read_text())
            r["name"] = name
            print(json.dumps(r), flush=True)
            runs[name].append(r)
            picks[name] = np.load(res.with_suffix(".npy"))
    if "other" in runs:
        same = bool(np.array_equal(picks["this"], picks["other"]))
        med = {k: statistics.median(r["wall_s"] for r in v) for k, v in runs.items()}
        cpu = {k: statistics.median(r["cpu_s"] for r in v) for k, v in runs.items()}
        print(json.dumps({"same_selection": same, "median_wall_s": med, "median_cpu_s": cpu,
                          "ratio_wall": round(med["this"] / med["other"], 3),
                          "ratio_cpu": round(cpu["this"] / cpu["other"], 3)}), flush=True)


if __name__ == "__main__":
    main()
