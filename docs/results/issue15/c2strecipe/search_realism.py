"""What `recipe search` now reports for its realism: the C2ST of the searched recipe (trial 4 of
docs/results/recipe-search-exdd/) and of `fitted` / `transplant --blend matched` at their defaults,
each synthesised from the search's fold-0 split (seed 0: fit goods + 31 guide defects) and tested
against the 32 validation defects of that split (TRAIN only; TEST is never read).

usage: PYTHONPATH=src python docs/results/issue15/c2strecipe/search_realism.py SEEDS OUT.json
"""
import json
import sys
import time

import yaml

from defectforge.data.formats import load_dataset
from defectforge.recipe.realism import recipe_realism
from defectforge.recipe.search import SearchSettings, carve_splits

root = "../shared/datasets/bsdata"
st = SearchSettings(detector="exdd", seed=0, max_good=60, max_val_good=40)  # the search's splits
sp = carve_splits(load_dataset(root), st)
best = yaml.safe_load(open("docs/results/recipe-search-exdd/best_recipe.yaml"))
recipes = {
    "searched recipe (trial 4)": {"ratio": best["recipe"]["ratio"], "generators": best["generators"]},
    "fitted (defaults)": {"ratio": 1.0, "generators": [{"name": "fitted", "weight": 1.0, "params": {}}]},
    "transplant blend matched": {"ratio": 1.0, "generators": [{"name": "transplant", "weight": 1.0,
                                                               "params": {"blend": "matched"}}]},
}
out = {"splits": sp.counts()}
for seed in [int(s) for s in sys.argv[1].split(",")]:
    for name, rec in recipes.items():
        t = time.time()
        r = recipe_realism(rec, sp, str(load_dataset(root).root), 100, seed)
        r = {k: v for k, v in r.items() if k != "c2st_method"}
        r["seconds"] = round(time.time() - t, 1)
        out[f"{name} s{seed}"] = r
        print(name, seed, r.get("c2st_auc"), r.get("c2st_ci"), "floor", r.get("c2st_floor_auc"), r["seconds"], flush=True)
json.dump(out, open(sys.argv[2], "w"), indent=1)
