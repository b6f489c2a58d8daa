"""Time one fit of the point-network detector (fused with the FPFH bank) at its defaults on one
class of the 3D benchmark, with progress for every phase.

Run: ``OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/time_fit_detect3d.py flange``
(optional second argument: a JSON dict of ``PointTransformerAD`` arguments; third: device).
Prints the load average, wall and CPU seconds of ``fit`` and ``fit_info_["phase_s"]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> int:
    from bench_detect3d import CLASSES, build_split

    from defectforge.detect3d import get_detector3d

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cls", choices=CLASSES)
    ap.add_argument("kwargs", nargs="?", default="{}")
    ap.add_argument("device", nargs="?", default="cpu")
    a = ap.parse_args(argv)
    args = argparse.Namespace(seed=0, variation=0.02, points=40000, train=4, good=0, per_type=0, val_types="bump")
    train, _ = build_split(a.cls, CLASSES.index(a.cls), args, "test")
    print(f"load at start {os.getloadavg()}", flush=True)
    t0, c0 = time.perf_counter(), time.process_time()
    det = get_detector3d("pointnet", seed=0, progress=True, device=a.device, **json.loads(a.kwargs)).fit(train)
    print(f"fit: {time.perf_counter() - t0:.1f} s wall, {time.process_time() - c0:.1f} CPU s", flush=True)
    print("phases (s): " + json.dumps({k: round(v, 1) for k, v in det.fit_info_["phase_s"].items()}), flush=True)
    print(f"load at end {os.getloadavg()}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
