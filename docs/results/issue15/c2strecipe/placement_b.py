"""Protocol B for the transplant placement (issue 15): which default, chosen on validation
defects only. Each set is synthesised from the recipe search's fold-0 split (seed 0 split: 60
fit goods + 31 guide defects, TRAIN only) and tested with the project's C2ST (defect-centred
crops, by scene, host-only beside it) against the 32 validation defects no generator saw
(`defectforge.recipe.realism.recipe_realism`, what `recipe search` reports). TEST is never read.

usage: PYTHONPATH=src python docs/results/issue15/c2strecipe/placement_b.py SEEDS OUT.json [SETS]
"""
import json
import os
import sys
import time

from defectforge.data.formats import load_dataset
from defectforge.recipe.realism import recipe_realism
from defectforge.recipe.search import SearchSettings, carve_splits

root = "../shared/datasets/bsdata"
SETS = {
    "random": {},
    "context": {"placement": "context"},
    "matched2_random": {"blend": "matched", "context": 2},
    "matched2_context": {"blend": "matched", "context": 2, "placement": "context"},
    "context_w3": {"placement": "context", "window": 3.0},
    "context_top20": {"placement": "context", "top": 0.2},
    "cubic": {"resample": "cubic"},
    "label_defect": {"label_mask": "defect"},
    "matched2_label_defect": {"blend": "matched", "context": 2, "label_mask": "defect"},
    "matched2_context_label_defect": {"blend": "matched", "context": 2, "placement": "context", "label_mask": "defect"},
    # (label_mask: a tried option, removed: it let pixels change outside the label)
    "matched1_random": {"blend": "matched", "context": 1},
    "matched1_context": {"blend": "matched", "context": 1, "placement": "context"},
    "uniform": {"use_real_stats": False},  # random places without the real defects' relative positions
    "fitted": {"_gen": "fitted"},  # `_gen`: another generator than transplant
    "fitted_context": {"_gen": "fitted", "placement": "context"},
    "matched2_context_cubic": {"blend": "matched", "context": 2, "placement": "context", "resample": "cubic"},
    # the real defects moved unrotated, unscaled, unflipped, colours as they are (2026-12-06: jitter_mask fix)
    "nojitter": {"rotate": 0.0, "scale": [1.0, 1.0], "flip": False, "color": 0.0},
}
st = SearchSettings(detector="exdd", seed=0, max_good=60, max_val_good=40)  # the search's own split
sp = carve_splits(load_dataset(root), st)
out = json.load(open(sys.argv[2])) if os.path.exists(sys.argv[2]) else {"splits": sp.counts()}
names = sys.argv[3].split(",") if len(sys.argv) > 3 else list(SETS)
for seed in [int(s) for s in sys.argv[1].split(",")]:
    for name in names:
        key = f"{name}/s{seed}"
        if key in out:
            continue
        t = time.time()
        params = {k: v for k, v in SETS[name].items() if k != "_gen"}
        rec = {"ratio": 1.0, "generators": [{"name": SETS[name].get("_gen", "transplant"), "weight": 1.0,
                                             "params": params}]}
        r = recipe_realism(rec, sp, str(load_dataset(root).root), 100, seed)
        r = {k: v for k, v in r.items() if k != "c2st_method"}
        r["params"], r["seconds"] = SETS[name], round(time.time() - t, 1)
        out[key] = r
        print(key, r.get("c2st_auc"), r.get("c2st_ci"), "host", r.get("c2st_host_auc"), "floor",
              r.get("c2st_floor_auc"), r["seconds"], flush=True)
        json.dump(out, open(sys.argv[2], "w"), indent=1)
