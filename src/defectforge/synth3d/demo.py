"""The "3D synthesis" section of the demo report: parts, defects, masks, timings."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from defectforge.synth3d.operators import Surface, SynthesisError, apply
from defectforge.synth3d.parts import make_part
from defectforge.synth3d.render import render_cloud

DEMO_CASES = (("flange", "dent", {"radius": 0.08, "depth": 0.02}),
              ("plate_pockets", "scratch", {"length": 0.35, "width": 0.012, "depth": 0.006}),
              ("bracket", "bend", {"angle": 15.0}),
              ("spur_gear", "crack", {"length": 0.3, "gap": 0.02, "depth": 0.08}),
              ("pipe_elbow", "bulge", {"size": 0.15, "amplitude": 0.03}),
              ("hex_bolt", "groove", {"length": 0.3, "width": 0.03, "depth": 0.008}))


def demo_section(report, out_dir: str | Path | None = None, seed: int = 0, n_points: int = 15000,
                 size: tuple[int, int] = (360, 270)) -> dict[str, Any]:
    """Add a "3D synthesis" section to ``report`` (a :class:`defectforge.report.Report`).

    One defect per parametric part; each row of the gallery shows the good part and the
    defective one with its mask in red. Returns the table rows (operator, points, mask
    points, seconds). ``out_dir`` is unused (images go to the report's assets) and kept
    for a uniform demo API.
    """
    from defectforge.report.visual import side_by_side

    sec = report.section("synth3d", "3D synthesis")
    sec.text("Parametric parts with MPAS-style defects (1D point/line, 2D plane, 3D free-form primitives). "
             "Masks are carried as point indices through every step, so the red points are exactly the "
             "points the operator moved by at least 0.1 % of the part diagonal (the recorded label threshold; "
             "or, for the crack, the walls left by removed points).")
    rows, items = [], []
    for k, (part, op, params) in enumerate(DEMO_CASES):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(k,)))
        cloud = make_part(part, n_points, rng)
        s = Surface(cloud.points, cloud.normals)
        s.tree  # build once, outside the timing
        for attempt in range(8):  # a random centre can be refused (a line running off the part): draw again
            t0 = time.perf_counter()
            try:
                res = apply(op, s.points, s.normals, rng, surface=s, **params)
            except SynthesisError:
                if attempt == 7:
                    raise
                continue
            dt = time.perf_counter() - t0
            break
        good = render_cloud(s.points, size=size, normals=s.normals)
        bad = render_cloud(res.points, res.mask, size=size, normals=res.normals)
        items.append((side_by_side(good, bad), f"{part}: {op}"))
        rows.append({"part": part, "operator": op, "points": len(res.points), "mask points": int(res.mask.sum()),
                     "mask %": 100.0 * float(res.mask.mean()), "seconds": dt})
    sec.gallery(items, max_width=2 * size[0] + 8)
    sec.table(rows, caption="one defect per part; seconds exclude the KD-tree build")
    return {"rows": rows}
