"""ExDD on BSData TEST at the README defaults: real defects only vs real + synthetic defects
with ExDD's ``synthetic_filter`` off (every synthetic row may enter the defect bank, as before)
and at its default 0.99 (synthetic rows as close to the normal bank as the validation good
patches are dropped). Two synthetic sets chosen before this run by earlier, validation-only
rules: the ExDD recipe search's best recipe (docs/results/recipe-search-exdd/best_recipe.yaml)
and `transplant`, blend matched, x1 (docs/results/issue15/transplant_matched_x1.yaml).
The filter's quantile (0.99) was fixed before this run from the method (a defect row must be
at least as far from the normal bank as all but 1 % of good patches); nothing here is chosen
from test numbers. Each TEST condition is scored once.

usage: PYTHONPATH=src python docs/results/issue15/synthetic_filter/downstream_filter.py 0,1,2 OUT.json
"""
import json, sys, time, warnings
from defectforge.data import load_dataset
from defectforge.detect import ExDD, evaluate_detector
from defectforge.synth2d.config import load_config
from defectforge.synth2d.engine import prepare

ds = load_dataset("../shared/datasets/bsdata")
train = [s for s in ds if s.split == "train"]
goods = [s for s in train if not s.is_defect]
defs = [s for s in train if s.is_defect]
SETS = {"recipe": "docs/results/recipe-search-exdd/best_recipe.yaml",
        "transplant_x1": "docs/results/issue15/transplant_matched_x1.yaml"}
out = {}
for seed in [int(x) for x in sys.argv[1].split(",")]:
    row = {}
    conds = [("real", [], None)]
    for name, path in SETS.items():
        cfg = load_config(path).model_copy(update={"seed": seed})
        t = time.time()
        eng, _ = prepare(cfg, ds)
        syn = eng.samples(cfg.n)
        row[f"{name}_n"] = len(syn)
        row[f"{name}_synth_s"] = round(time.time() - t, 1)
        conds += [(f"{name}/off", syn, None), (f"{name}/0.99", syn, 0.99)]
    for name, extra, filt in conds:
        t = time.time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = ExDD(seed=seed, synthetic_filter=filt).fit(goods, defects=defs + extra)
        fit_s = round(time.time() - t, 1)
        r = evaluate_detector(m, ds, split="test")["metrics"]
        info = m.fit_info_
        row[name] = {k: round(float(r[k]), 4) for k in ("image_auroc", "aupro", "pixel_auroc", "image_ap", "pixel_ap")}
        row[name] |= {"image_score": m.image_score_, "val_auroc": info["image_score"]["val_auroc"],
                      "bank_defect": info["bank_defect"], "filter": info["synthetic_filter"],
                      "fit_s": fit_s, "eval_s": round(time.time() - t - fit_s, 1)}
        print(seed, name, json.dumps(row[name]), flush=True)
    out[seed] = row
    json.dump(out, open(sys.argv[2], "w"), indent=1)
