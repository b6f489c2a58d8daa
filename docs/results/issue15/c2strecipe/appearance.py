"""Which appearance statistics tell a synthetic set from BSData's TRAIN pitting defects?

usage: PYTHONPATH=src python docs/results/issue15/c2strecipe/appearance.py OUT.json SYNTH_DIR...
Per statistic (defectforge.filter.c2st_crops.APPEARANCE): real and synthetic medians and the
single-statistic AUC (0.5 = same; > 0.5: synthetic larger); plus the C2ST on the 10
statistics alone (seed 0). TRAIN only; TEST is never read.
"""
import json
import sys

import numpy as np

from defectforge.data import load_dataset
from defectforge.filter.c2st import c2st, crops_and_stats, instance_boxes, window_from_boxes
from defectforge.filter.c2st_crops import APPEARANCE
from defectforge.metrics import auroc

real = [s for s in load_dataset("../shared/datasets/bsdata/split.csv").filter(split="train") if s.is_defect]
win = window_from_boxes(instance_boxes(real))
_, rs, rg = crops_and_stats(real, win)
out = {}
for d in sys.argv[2:]:
    syn = [s for s in load_dataset(d) if s.is_defect]
    _, ss, sg = crops_and_stats(syn, win)
    y = np.r_[np.zeros(len(rs)), np.ones(len(ss))]
    row = {}
    for j, name in enumerate(APPEARANCE):
        v = np.r_[rs[:, j], ss[:, j]]
        row[name] = {"real_median": round(float(np.median(rs[:, j])), 3),
                     "synth_median": round(float(np.median(ss[:, j])), 3),
                     "auc": round(float(auroc(y, v)), 3)}
    r = c2st(rs, ss, rg, sg, seed=0, n_boot=200)
    out[d] = {"per_stat": row, "c2st_appearance_only": round(r["auc"], 4), "n_real": len(rs), "n_synth": len(ss)}
    print(d, out[d]["c2st_appearance_only"])
    for k, v in sorted(row.items(), key=lambda kv: -abs(kv[1]["auc"] - 0.5)):
        print(f"  {k:10s} real {v['real_median']:8.3f} synth {v['synth_median']:8.3f} auc {v['auc']:.3f}")
json.dump(out, open(sys.argv[1], "w"), indent=1)
