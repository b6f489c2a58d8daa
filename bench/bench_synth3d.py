"""Benchmark: seconds per MPAS operator on 100k-point parametric parts.

Target (issue 5): at most 0.2 s per operator on a 2-core CPU, bend and scratch
included. The KD-tree of each part is built once (as in the pipeline) and reported
separately. Writes docs/bench/synth3d.md.

    .venv/bin/python bench/bench_synth3d.py [--points 100000] [--repeats 5] [--out docs/bench/synth3d.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from defectforge._atomic import atomic_write_text
from defectforge.synth3d.operators import OPERATORS, Surface, apply
from defectforge.synth3d.parts import make_part

PARTS = ("flange", "plate_pockets", "spur_gear", "pipe_elbow")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("docs/bench/synth3d.md"))
    args = ap.parse_args(argv)

    times: dict[str, list[float]] = {op: [] for op in OPERATORS}
    tree_times, normal_times = [], []
    for k, part in enumerate(PARTS):
        cloud = make_part(part, args.points, np.random.default_rng(k))
        t0 = time.perf_counter()
        s = Surface(cloud.points, cloud.normals)
        s.tree
        tree_times.append(time.perf_counter() - t0)
        from defectforge.synth3d.geometry import estimate_normals

        t0 = time.perf_counter()
        estimate_normals(cloud.points, tree=s.tree)
        normal_times.append(time.perf_counter() - t0)
        for op in OPERATORS:
            for r in range(args.repeats):
                rng = np.random.default_rng(1000 * k + r)
                t0 = time.perf_counter()
                apply(op, s.points, s.normals, rng, surface=s)
                times[op].append(time.perf_counter() - t0)
    rows = []
    for op, ts in times.items():
        rows.append((op, OPERATORS[op].primitive, statistics.median(ts), max(ts), len(ts)))
    load = os.getloadavg()
    lines = [
        "# Benchmark: 3D synthesis operators (MPAS-style)", "",
        f"- command: `{Path(sys.executable).name} bench/bench_synth3d.py --points {args.points} --repeats {args.repeats}`",
        f"- date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {platform.machine()} {os.cpu_count()}-core CPU, Python {platform.python_version()}, "
        f"numpy {np.__version__}",
        f"- load average at the end: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} — the machine was shared with "
        "other jobs (other engineers' tests and builds), so these are upper bounds.",
        f"- parts: {', '.join(PARTS)}, {args.points:,} points each, {args.repeats} random draws (centre, direction, "
        "parameters from the operator's default ranges) per part and operator.",
        "- timing: one operator call (support search, geodesic path, displacement, mask, normal refresh); "
        "the part's KD-tree is built once per cloud and reused, as the pipeline does.", "",
        "Target: at most 0.2 s per operator on a 2-core CPU. (The public MPAS release takes about 35 s for bend "
        "on 30k points because it always remeshes and resamples to 250k points; ours keeps N.)", "",
        "| operator | primitive | median s | max s | calls | within 0.2 s |", "|---|---|---:|---:|---:|---|",
    ]
    for op, prim, med, mx, n in rows:
        lines.append(f"| {op} | {prim} | {med:.4f} | {mx:.4f} | {n} | {'yes' if mx <= 0.2 else 'NO'} |")
    lines += ["", f"Once per cloud: KD-tree build median {statistics.median(tree_times):.3f} s; "
              f"PCA normals + outward orientation (only for clouds without normals) median "
              f"{statistics.median(normal_times):.3f} s.", ""]
    atomic_write_text(args.out, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
