"""Protocol B for the host choice (`source.hosts`, issue 15): does putting synthetic defects
only on the good images most like the real defect images make them harder to tell from real
ones? Chosen on validation defects only: each set is synthesised from the recipe search's
split (seed 0, validation by whole wear sequences, all fit goods; TRAIN only) from the fit goods
and the guide defects, and tested with the project's C2ST (defect-centred crops, by scene,
host-only beside it) against the validation defects, whose scenes the guide defects do not
share (`defectforge.recipe.realism.recipe_realism`, what `recipe search` reports). Paired by
seed with the same generator on all good images. TEST is never read.

usage: PYTHONPATH=src python docs/results/issue15/hosts/hosts_b.py SEEDS OUT.json [SETS]
"""
import json
import os
import sys
import time

from defectforge.data.formats import load_dataset
from defectforge.recipe.realism import recipe_realism
from defectforge.recipe.search import SearchSettings, carve_splits

root = "../shared/datasets/bsdata"
SETS = {  # name: (generator, params, hosts)
    "transplant": ("transplant", {}, "all"),
    "transplant_similar": ("transplant", {}, "similar"),
    "fitted": ("fitted", {}, "all"),
    "fitted_similar": ("fitted", {}, "similar"),
    "pitting": ("pitting", {}, "all"),
    "pitting_similar": ("pitting", {}, "similar"),
}
st = SearchSettings(detector="exdd", seed=0, max_good=None, max_val_good=40)  # the search's split, all fit goods
ds = load_dataset(root)
sp = carve_splits(ds, st)
out = json.load(open(sys.argv[2])) if os.path.exists(sys.argv[2]) else {"splits": sp.counts(),
                                                                        "split_by": sp.describe()}
names = sys.argv[3].split(",") if len(sys.argv) > 3 else list(SETS)
for seed in [int(s) for s in sys.argv[1].split(",")]:
    for name in names:
        key = f"{name}/s{seed}"
        if key in out:
            continue
        t = time.time()
        gen, params, hosts = SETS[name]
        rec = {"ratio": 1.0, "hosts": hosts, "generators": [{"name": gen, "weight": 1.0, "params": params}]}
        r = recipe_realism(rec, sp, str(ds.root), 100, seed)
        r = {k: v for k, v in r.items() if k != "c2st_method"}
        r["set"], r["seconds"] = [gen, params, hosts], round(time.time() - t, 1)
        out[key] = r
        print(key, r.get("c2st_auc"), r.get("c2st_ci"), "host", r.get("c2st_host_auc"), "floor",
              r.get("c2st_floor_auc"), r["seconds"], flush=True)
        json.dump(out, open(sys.argv[2] + ".tmp", "w"), indent=1)
        os.replace(sys.argv[2] + ".tmp", sys.argv[2])
