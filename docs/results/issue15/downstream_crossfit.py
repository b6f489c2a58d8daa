"""ExDD on BSData TEST at the README defaults: real defects only vs real + the searched recipe's
synthetic defects (docs/results/recipe-search-exdd/best_recipe.yaml, chosen on validation before
this run), with the cross-fitted validation default. Nothing here is chosen from test numbers.

usage: PYTHONPATH=src python docs/results/issue15/downstream_crossfit.py 0,1,2 OUT.json [RECIPE.yaml]
(RECIPE.yaml: another searched recipe instead of the default one)
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
base = load_config(sys.argv[3] if len(sys.argv) > 3 else "docs/results/recipe-search-exdd/best_recipe.yaml")
out = {}
for seed in [int(x) for x in sys.argv[1].split(",")]:
    cfg = base.model_copy(update={"seed": seed})
    t = time.time()
    eng, _ = prepare(cfg, ds)
    syn = eng.samples(cfg.n)
    row = {"n_synthetic": len(syn), "synth_s": round(time.time() - t, 1)}
    for name, extra in (("real", []), ("real+recipe", syn)):
        t = time.time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = ExDD(seed=seed).fit(goods, defects=defs + extra)
        fit_s = round(time.time() - t, 1)
        r = evaluate_detector(m, ds, split="test")["metrics"]
        row[name] = {k: round(float(r[k]), 4) for k in ("image_auroc", "aupro", "pixel_auroc")}
        row[name] |= {"image_score": m.image_score_, "fit_s": fit_s, "eval_s": round(time.time() - t - fit_s, 1)}
    out[seed] = row
    print(seed, json.dumps(row), flush=True)
    json.dump(out, open(sys.argv[2], "w"), indent=1)
