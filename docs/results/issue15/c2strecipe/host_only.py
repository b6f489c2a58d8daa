"""C2ST of BSData's real TRAIN pitting vs synthetic sets, per crop: the defect test, its two
feature groups alone, the host-only test (defect-free crops of the real defect images vs
the synthetic images' hosts) and the real-vs-real floors of both.

usage (repo root): PYTHONPATH=src python docs/results/issue15/c2strecipe/host_only.py SEEDS NAMES CROPS OUT.json [GROUPS]
  e.g. 0,1,2 pitting,transplant,fitted,transplant_matched,best_recipe_n100 defect,window host_only.json scene
  GROUPS: image (folds, bootstrap and floors by image; host_only.json was made so, before the
  scene grouping existed) or scene (the default of the test now: BSData's wear sequences; the
  synthetic crops take their host's sequence)
  the synthetic sets are out/c2st_<NAME>_s<SEED> (made by run.sh); the seed also drives folds,
  bootstrap and the host crops' places. TEST is never read.
"""
import json
import os
import sys
import time

import numpy as np

from defectforge.data import load_dataset
from defectforge.filter.c2st import host_c2st, realism_c2st, source_groups, summary_lines
from defectforge.filter.embed import default_embedder

seeds = [int(x) for x in sys.argv[1].split(",")]
names, crops, out_path = sys.argv[2].split(","), sys.argv[3].split(","), sys.argv[4]
ds = load_dataset("../shared/datasets/bsdata/split.csv")
real = [s for s in ds.filter(split="train") if s.is_defect]
by_scene = (sys.argv[5] if len(sys.argv) > 5 else "image") == "scene"
gk, hg = ("group", source_groups(ds)) if by_scene else (None, None)
emb = default_embedder(size=96)
out = json.load(open(out_path)) if os.path.exists(out_path) else {}
for seed in seeds:
    for crop in crops:
        key = f"real_floor/{crop}/s{seed}"
        if key not in out:  # host-only floor: two disjoint halves of the real defect images
            unit = [s.meta["group"] if by_scene else s.name for s in real]
            half = set(np.random.default_rng(seed).permutation(np.unique(unit))[: len(set(unit)) // 2].tolist())
            a = [s for u, s in zip(unit, real) if u in half]
            b = [s for u, s in zip(unit, real) if u not in half]
            window = None
            if crop == "window":
                from defectforge.filter.c2st import instance_boxes, window_from_boxes
                window = window_from_boxes(instance_boxes(real))
            r = host_c2st(a, b, emb, window, seed=seed, group_key=gk)
            out[key] = ({"c2st_host_auc": round(r["auc"], 4), "c2st_host_ci": [round(r["ci_low"], 4), round(r["ci_high"], 4)],
                         "n": [r["n_a"], r["n_b"]]} if r["auc"] is not None else {"c2st_host_reason": r["reason"]})
            print(key, out[key], flush=True)
        for name in names:
            key = f"{name}/{crop}/s{seed}"
            d = f"out/c2st_{name}_s{seed}"
            if key in out or not os.path.exists(f"{d}/manifest.csv"):
                continue
            t = time.time()
            syn = [s for s in load_dataset(d) if s.is_defect]
            r = summary_lines(realism_c2st(real, syn, embedder=emb, seed=seed, crop=crop, group_key=gk, host_groups=hg))
            r["seconds"] = round(time.time() - t, 1)
            out[key] = r
            print(key, {k: v for k, v in r.items() if "auc" in k or k == "seconds"}, flush=True)
            json.dump(out, open(out_path, "w"), indent=1)
json.dump(out, open(out_path, "w"), indent=1)
