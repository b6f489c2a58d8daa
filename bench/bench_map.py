"""Benchmark of the in-house COCO box mAP against pycocotools (the reference).

Random detection sets with boxes of every COCO size (small / medium / large), jittered true
detections and false positives; the same boxes go to ``defectforge.metrics.mean_average_precision``
and to pycocotools' ``COCOeval`` (bbox). Reports the wall time of each and the largest absolute
difference over mAP50-95, mAP50 and the small / medium / large APs. Writes ``docs/bench/map.md``.

    .venv/bin/python bench/bench_map.py [--images 300 1000] [--out docs/bench/map.md]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import os
import platform
import time
from pathlib import Path

import numpy as np

from defectforge._atomic import atomic_write_text
from defectforge.data.sample import Box
from defectforge.metrics import mean_average_precision

REPO = Path(__file__).resolve().parents[1]
SIDES = (8, 16, 24, 31, 32, 48, 64, 95, 96, 128, 180)


def make_set(n_images: int, seed: int, classes=("pit", "scratch", "dent")):
    rng = np.random.default_rng(seed)
    gts, preds = [], []
    for _ in range(n_images):
        g, p = [], []
        for _ in range(rng.integers(0, 8)):
            w, h = float(rng.choice(SIDES)), float(rng.choice(SIDES))
            x0, y0 = rng.uniform(0, 400, 2)
            lab = str(rng.choice(classes))
            g.append(Box(x0, y0, x0 + w, y0 + h, lab))
            if rng.random() < 0.8:
                j = rng.normal(0, 0.08 * max(w, h), 4)
                p.append(Box(x0 + j[0], y0 + j[1], max(x0 + j[0] + 1, x0 + w + j[2]),
                             max(y0 + j[1] + 1, y0 + h + j[3]), lab, float(rng.uniform(0.05, 1))))
        for _ in range(rng.integers(0, 6)):
            x0, y0 = rng.uniform(0, 400, 2)
            s = float(rng.choice(SIDES))
            p.append(Box(x0, y0, x0 + s, y0 + s, str(rng.choice(classes)), float(rng.uniform(0.05, 1))))
        gts.append(g)
        preds.append(p)
    return gts, preds


def pycoco(gts, preds) -> list[float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    names = sorted({b.label for im in gts for b in im} | {b.label for im in preds for b in im})
    cat = {n: i + 1 for i, n in enumerate(names)}
    images, anns, dets = [], [], []
    for i, (g, p) in enumerate(zip(gts, preds)):
        images.append({"id": i + 1, "width": 600, "height": 600})
        anns += [{"id": len(anns) + k + 1, "image_id": i + 1, "category_id": cat[b.label], "bbox": list(b.xywh()),
                  "area": b.area, "iscrowd": 0} for k, b in enumerate(g)]
        dets += [{"image_id": i + 1, "category_id": cat[b.label], "bbox": list(b.xywh()), "score": b.score}
                 for b in p]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": images, "annotations": anns,
                        "categories": [{"id": v, "name": k} for k, v in cat.items()]}
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(ev.stats[i]) for i in (0, 1, 3, 4, 5)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, nargs="+", default=[300, 1000])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "bench" / "map.md")
    args = ap.parse_args()
    rows = []
    for n in args.images:
        gts, preds = make_set(n, seed=n)
        t = time.perf_counter()
        ours = mean_average_precision(gts, preds)
        t_ours = time.perf_counter() - t
        t = time.perf_counter()
        ref = pycoco(gts, preds)
        t_ref = time.perf_counter() - t
        mine = [ours[k] for k in ("map50_95", "map50", "map_small", "map_medium", "map_large")]
        diff = max(abs((a if a is not None else -1.0) - b) for a, b in zip(mine, ref))
        rows.append((n, sum(map(len, gts)), sum(map(len, preds)), t_ours, t_ref, diff, mine))
    load = os.getloadavg()
    lines = [
        "# COCO box mAP: in-house vs pycocotools",
        "",
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), "
        f"Python {platform.python_version()}, numpy {np.__version__}",
        f"- load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
        "(other jobs were running on the same cores)",
        "- command: `.venv/bin/python bench/bench_map.py`"
        + (f" with `--images {' '.join(map(str, args.images))}`" if args.images != [300, 1000] else ""),
        "- data: random boxes of every COCO size (sides 8-180 px, some on the 32 / 96 boundaries), 3 classes, "
        "80 % jittered true detections and false positives; pycocotools `COCOeval` (bbox) includes building "
        "its index. `max |diff|` is over mAP50-95, mAP50 and APs / APm / APl.",
        "",
        "| images | boxes | detections | defectforge s | pycocotools s | max abs diff | mAP50-95 | APs | APm | APl |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n, ng, nd, to, tr, diff, m in rows:
        lines.append(f"| {n} | {ng} | {nd} | {to:.2f} | {tr:.2f} | {diff:.1e} | {m[0]:.4f} | {m[2]:.4f} | "
                     f"{m[3]:.4f} | {m[4]:.4f} |")
    lines += ["", "The in-house implementation is kept as the default only while it matches pycocotools to "
              "1e-6 (this table and `tests/test_metrics_detection.py::test_matches_pycocotools`); the times say "
              "whether it is also the faster one on this machine."]
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
