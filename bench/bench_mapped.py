"""Check and measure the projected rows in a file mapping (``bank.mapped``) on real data: the
same ExDD fit (README defaults) on the first N BSData train-good images (flipped / cropped
copies past 402, as ``bench_scale.py``) with the rows in memory and with them mapped, each in
its own process; the two normal banks must be identical. Prints and writes fit time, coreset
time and peak RSS of each.

    python bench/bench_mapped.py --n 402          # writes bench/_work/mapped_402.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from _machine import uptime  # noqa: E402
WORK = REPO / "bench" / "_work"


def worker(n: int, mode: str, out: Path) -> None:
    import warnings

    import numpy as np

    import defectforge.detect.exdd_fit as exdd_fit
    from bench_exdd import _samples
    from bench_scale import DATA, train_images
    from defectforge.detect.exdd import ExDD

    exdd_fit.MAP_ROWS_ABOVE = 0 if mode == "mapped" else 1 << 62
    normal = train_images(DATA, n)
    defects = [s for s in _samples(DATA, "train") if s.is_defect]
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = ExDD().fit(normal, defects)
    fit_s = time.perf_counter() - t0
    np.save(out.with_suffix(".npy"), m.bank_normal_)
    out.write_text(json.dumps({"mode": mode, "fit_s": round(fit_s, 2),
                               "coreset_s": m.fit_info_["seconds_coreset"],
                               "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=402)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.n, args.worker, args.out)
        return
    import numpy as np

    WORK.mkdir(parents=True, exist_ok=True)
    res = {"n_images": args.n, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "uptime_before": uptime()}
    for mode in ("memory", "mapped"):
        out = WORK / f"mapped_{args.n}_{mode}.json"
        subprocess.run([sys.executable, __file__, "--n", str(args.n), "--worker", mode, "--out", str(out)], check=True)
        res[mode] = json.loads(out.read_text())
    a, b = (np.load(WORK / f"mapped_{args.n}_{m}.npy") for m in ("memory", "mapped"))
    res["banks_identical"] = bool(a.shape == b.shape and np.array_equal(a, b))
    res["bank_rows"] = int(a.shape[0])
    res["uptime_after"] = uptime()
    (WORK / f"mapped_{args.n}.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
