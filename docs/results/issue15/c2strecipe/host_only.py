"""C2ST of BSData's real TRAIN pitting vs synthetic sets, per crop: the defect test, its two
feature groups alone, the host-only test (defect-free crops of the real defect images vs
the synthetic images' hosts) and the real-vs-real floors of both.

usage (repo root): PYTHONPATH=src python docs/results/issue15/c2strecipe/host_only.py SEEDS NAMES CROPS OUT.json
  e.g. 0,1,2 pitting,transplant,fitted,transplant_matched,best_recipe_n100 defect,window host_only.json
  the synthetic sets are out/c2st_<NAME>_s<SEED> (made by run.sh); the seed also drives folds,
  bootstrap and the host crops' places. TEST is never read.
"""
import json
import os
import sys
import time

import numpy as np

from defectforge.data import load_dataset
from defectforge.filter.c2st import host_c2st, realism_c2st, summary_lines
from defectforge.filter.embed import default_embedder

seeds = [int(x) for x in sys.argv[1].split(",")]
names, crops, out_path = sys.argv[2].split(","), sys.argv[3].split(","), sys.argv[4]
real = [s for s in load_dataset("../shared/datasets/bsdata/split.csv").filter(split="train") if s.is_defect]
emb = default_embedder(size=96)
out = json.load(open(out_path)) if os.path.exists(out_path) else {}
for seed in seeds:
    for crop in crops:
        key = f"real_floor/{crop}/s{seed}"
        if key not in out:  # host-only floor: two disjoint halves of the real defect images
            half = set(np.random.default_rng(seed).permutation(len(real))[: len(real) // 2].tolist())
            a = [s for i, s in enumerate(real) if i in half]
            b = [s for i, s in enumerate(real) if i not in half]
            from defectforge.filter.c2st_crops import defect_places, host_crops
            window = None
            if crop == "window":
                from defectforge.filter.c2st import instance_boxes, window_from_boxes
                window = window_from_boxes(instance_boxes(real))
            r = host_c2st(a, b, emb, window, seed=seed)
            out[key] = {"c2st_host_auc": round(r["auc"], 4), "c2st_host_ci": [round(r["ci_low"], 4), round(r["ci_high"], 4)],
                        "n": [r["n_a"], r["n_b"]]}
            print(key, out[key], flush=True)
        for name in names:
            key = f"{name}/{crop}/s{seed}"
            d = f"out/c2st_{name}_s{seed}"
            if key in out or not os.path.exists(f"{d}/manifest.csv"):
                continue
            t = time.time()
            syn = [s for s in load_dataset(d) if s.is_defect]
            r = summary_lines(realism_c2st(real, syn, embedder=emb, seed=seed, crop=crop))
            r["seconds"] = round(time.time() - t, 1)
            out[key] = r
            print(key, {k: v for k, v in r.items() if "auc" in k or k == "seconds"}, flush=True)
            json.dump(out, open(out_path, "w"), indent=1)
json.dump(out, open(out_path, "w"), indent=1)
