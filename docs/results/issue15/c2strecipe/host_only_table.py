"""Markdown rows of host_only.json: mean +- std over seeds and per seed AUC (95 % interval).

usage: python docs/results/issue15/c2strecipe/host_only_table.py host_only.json CROP
"""
import json
import sys

import numpy as np

d, crop = json.load(open(sys.argv[1])), sys.argv[2]
names = {"pitting": "`pitting` defaults", "transplant": "`transplant` (plain)", "fitted": "`fitted` defaults",
         "transplant_matched": "`transplant`, `blend: matched`",
         "best_recipe_n100": "searched recipe (`pitting`, real masks, darkness 0.11-0.19; n 100)"}


def cell(rows, key):
    vals = [r[f"{key}_auc"] for r in rows]
    per = "; ".join(f"{r[key + '_auc']:.3f} ({r[key + '_ci'][0]:.3f}-{r[key + '_ci'][1]:.3f})" for r in rows)
    return f"{np.mean(vals):.3f} ± {np.std(vals, ddof=1) if len(vals) > 1 else 0:.3f}", per


seeds = sorted({k.split("/")[2] for k in d if k.split("/")[1] == crop})
for name, label in names.items():
    rows = [d[f"{name}/{crop}/{s}"] for s in seeds if f"{name}/{crop}/{s}" in d]
    if not rows:
        continue
    m, per = cell(rows, "c2st")
    h, hper = cell(rows, "c2st_host")
    bb = np.mean([r["c2st_backbone_auc"] for r in rows])
    ap = np.mean([r["c2st_appearance_auc"] for r in rows])
    print(f"| {label} | {len(rows)} | {m} | {per} | {h} | {hper} | {bb:.3f} / {ap:.3f} |")
rows = [d[f"pitting/{crop}/{s}"] for s in seeds if f"pitting/{crop}/{s}" in d]
fl = [r["c2st_floor_auc"] for r in rows]
hf = [d[f"real_floor/{crop}/{s}"] for s in seeds]
hv = [h["c2st_host_auc"] for h in hf if "c2st_host_auc" in h]
print(f"| **floor: real vs real** (two halves of the real images or scenes) | {len(rows)} | {np.mean(fl):.3f} ± {np.std(fl, ddof=1):.3f} | "
      + "; ".join(f"{r['c2st_floor_auc']:.3f} ({r['c2st_floor_ci'][0]:.3f}-{r['c2st_floor_ci'][1]:.3f})" for r in rows)
      + " | " + (f"{np.mean(hv):.3f} ± {np.std(hv, ddof=1) if len(hv) > 1 else 0:.3f}" if hv else "not run")
      + " | " + "; ".join(f"{h['c2st_host_auc']:.3f} ({h['c2st_host_ci'][0]:.3f}-{h['c2st_host_ci'][1]:.3f})"
                          if "c2st_host_auc" in h else "not run (too few crops)" for h in hf) + " | |")
